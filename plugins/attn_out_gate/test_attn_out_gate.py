"""AttnOutGate: transparent at init (bit for bit), reference formula for both sources, model wiring."""

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
from plugins.attn_out_gate.module import AttnOutGateModule


def test_matches_slow_reference_from_the_attention_input():
    g = torch.Generator().manual_seed(0)
    y, v, x = torch.randn(2, 5, 8, 16, generator=g), torch.randn(2, 5, 4, 16, generator=g), torch.randn(2, 5, 64, generator=g)
    gate = AttnOutGateModule(8, 12)
    with torch.no_grad():
        gate.attn_gate_proj.weight.normal_(generator=g)
    w = gate.attn_gate_proj.weight.detach()
    expected = torch.empty_like(y)
    for b in range(2):
        for t in range(5):
            for h in range(8):
                expected[b, t, h] = y[b, t, h] * 2.0 * torch.sigmoid(w[h] @ x[b, t, :12])
    torch.testing.assert_close(gate(y, v, x), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(AttnOutGateModule(8, 12)(y, v, x), y)  # zero init: 2 sigmoid(0) = 1


@pytest.mark.parametrize("src", ["proj", "q"])
def test_zero_init_equals_core_model_bit_for_bit(src):
    core, _, _ = build_model(micro_stack(), seed=0)
    gated, _, _ = build_model(micro_stack(enable=["attn_out_gate"], overrides=[f"techniques.attn_out_gate.src='{src}'"]), seed=0)
    assert_core_init_untouched(core, gated)
    randomize_shared_parameters(core, gated)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.forward_logits(ids), gated.forward_logits(ids))
    with torch.no_grad():
        gated.blocks[1].attn.output_transforms[0].attn_gate_proj.weight.normal_()
    assert not torch.equal(core.forward_logits(ids), gated.forward_logits(ids))


def test_query_source_reads_the_raw_query_projection():
    model, _, _ = build_model(micro_stack(enable=["attn_out_gate"], overrides=["techniques.attn_out_gate.src='q'"]), seed=0)
    attn = model.blocks[0].attn
    gate = attn.output_transforms[0]
    assert gate._query[0] is attn.c_q
    # Bound, not registered: the query projection is saved once, under the attention.
    assert not any("output_transforms.0._query" in n or n.endswith("output_transforms.0.c_q.weight") for n in model.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        gate.attn_gate_proj.weight.normal_(generator=g)
    y, v, x = torch.randn(2, 5, 4, 16, generator=g), torch.randn(2, 5, 2, 16, generator=g), torch.randn(2, 5, 64, generator=g)
    q_raw = attn.c_q(x)  # [B, T, model_dim], before reshape, norm and RoPE
    expected = y * (2.0 * torch.sigmoid(q_raw[..., :12] @ gate.attn_gate_proj.weight.T))[..., None]
    torch.testing.assert_close(gate(y, v, x), expected, rtol=1e-5, atol=1e-6)


def test_parameter_names_and_roles():
    model, _, _ = build_model(micro_stack(enable=["attn_out_gate"]), seed=0)
    added = {n: p for n, p in model.named_parameters() if "output_transforms" in n}
    assert sorted(added) == [f"blocks.{i}.attn.output_transforms.0.attn_gate_proj.weight" for i in range(2)]
    # 2-D and under blocks.*: without the pinned role it would be trained by Muon.
    assert all(p.shape == (4, 12) and role_of(n, p) == "scalar" and is_control_tensor(n) for n, p in added.items())


@pytest.mark.parametrize("other", ["sparse_attn_gate", "gated_attn"])
def test_conflicts_with_the_other_head_output_gates(other):
    with pytest.raises(StackError, match="conflicts"):
        micro_stack(enable=["attn_out_gate", other])


def test_trains_end_to_end(tmp_path):
    # The query source exercises the most: the c_q binding and gradients through the gate into c_q.
    report = run_micro(tmp_path, enable=["attn_out_gate"], overrides=["techniques.attn_out_gate.src='q'"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
