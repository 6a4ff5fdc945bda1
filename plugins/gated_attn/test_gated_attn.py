"""GatedAttn: reference formula, W=0 scales by exactly 0.5, init statistics, model wiring."""

from __future__ import annotations

import pytest
import torch

from golf_core.model.gpt import is_control_tensor
from golf_core.optim.roles import role_of
from golf_core.stack import StackError
from golf_core.testing import (
    assert_core_init_untouched,
    build_model,
    micro_stack,
    randomize_shared_parameters,
    run_micro,
)
from plugins.gated_attn.module import GatedAttnModule


def random_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, 8, 16, generator=g), torch.randn(2, 5, 4, 16, generator=g), torch.randn(2, 5, 64, generator=g)


def test_matches_slow_reference():
    y, v, x = random_inputs()
    gate = GatedAttnModule(8, 64, init_std=0.2)
    w = gate.attn_gate_w.detach().double()
    expected = torch.empty_like(y)
    for b in range(2):
        for t in range(5):
            for h in range(8):
                expected[b, t, h] = y[b, t, h] * float(torch.sigmoid(w[h] @ x[b, t].double()))
    torch.testing.assert_close(gate(y, v, x), expected, rtol=1e-5, atol=1e-6)


def test_zero_weights_scale_by_exactly_one_half_and_every_input_dim_counts():
    y, v, x = random_inputs()
    assert torch.equal(GatedAttnModule(8, 64, init_std=0.0)(y, v, x), y * 0.5)
    gate = GatedAttnModule(8, 64, init_std=0.2)
    edited = x.clone()
    edited[..., 63] += 1.0  # dense: the last dim feeds the gate too
    assert not torch.equal(gate(y, v, edited), gate(y, v, x))


def test_init_and_zero_gate_identity_against_the_core_model():
    core, _, _ = build_model(micro_stack(), seed=0)
    gated, _, _ = build_model(micro_stack(enable=["gated_attn"]), seed=0)
    assert_core_init_untouched(core, gated)  # the gate draws from a private RNG
    w0, w1 = (gated.blocks[i].attn.output_transforms[0].attn_gate_w for i in range(2))
    assert not torch.equal(w0, w1) and 0.005 < torch.cat([w0, w1]).std() < 0.015  # N(0, 0.01), per-layer streams
    randomize_shared_parameters(core, gated)
    with torch.no_grad():
        w0.zero_()
        w1.zero_()
        for block in core.blocks:
            block.attn.proj.weight.mul_(0.5)  # W = 0 gives sigmoid(0) = 0.5 exactly
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.forward_logits(ids), gated.forward_logits(ids))


def test_parameter_names_and_roles():
    model, _, _ = build_model(micro_stack(enable=["gated_attn"]), seed=0)
    added = {n: p for n, p in model.named_parameters() if "output_transforms" in n}
    assert sorted(added) == [f"blocks.{i}.attn.output_transforms.0.attn_gate_w" for i in range(2)]
    assert all(p.shape == (4, 64) and role_of(n, p) == "scalar" and is_control_tensor(n) for n, p in added.items())


@pytest.mark.parametrize("other", ["sparse_attn_gate", "attn_out_gate"])
def test_conflicts_with_the_other_head_output_gates(other):
    with pytest.raises(StackError, match="conflicts"):
        micro_stack(enable=["gated_attn", other])


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["gated_attn"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
