"""SparseAttnGate: W=0 scales by exactly 0.5, reference formula, only dims [:window] matter, model wiring."""

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
from plugins.sparse_attn_gate.module import SparseAttnGateModule


def random_inputs(heads=8, kv_heads=4, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 5, heads, 16, generator=g),
        torch.randn(2, 5, kv_heads, 16, generator=g),
        torch.randn(2, 5, dim, generator=g),
    )


def test_zero_weights_scale_every_head_by_exactly_one_half():
    y, v, x = random_inputs()
    assert torch.equal(SparseAttnGateModule(8, 12, scale=0.5)(y, v, x), y * 0.5)


def test_matches_slow_reference():
    y, v, x = random_inputs()
    gate = SparseAttnGateModule(8, 12, scale=0.5, init_std=0.3)
    w = gate.attn_gate_w.detach()
    expected = torch.empty_like(y)
    for b in range(2):
        for t in range(5):
            for h in range(8):
                logit = 0.5 * sum(float(w[h, j]) * float(x[b, t, j]) for j in range(12))
                expected[b, t, h] = y[b, t, h] / (1.0 + torch.exp(torch.tensor(-logit)))
    torch.testing.assert_close(gate(y, v, x), expected, rtol=1e-5, atol=1e-6)


def test_gate_reads_only_the_first_window_dims():
    y, v, x = random_inputs()
    gate = SparseAttnGateModule(8, 12, scale=1.0, init_std=0.5)
    base = gate(y, v, x)
    tail = x.clone()
    tail[..., 12:] += 3.0
    assert torch.equal(gate(y, v, tail), base)
    head = x.clone()
    head[..., 11] += 3.0
    assert not torch.equal(gate(y, v, head), base)


def test_zero_gate_equals_core_model_with_halved_output_projection_bit_for_bit():
    core, _, _ = build_model(micro_stack(), seed=0)
    gated, _, _ = build_model(micro_stack(enable=["sparse_attn_gate"]), seed=0)
    assert_core_init_untouched(core, gated)
    randomize_shared_parameters(core, gated)
    with torch.no_grad():
        for block in core.blocks:
            block.attn.proj.weight.mul_(0.5)  # exact: a power of two
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.forward_logits(ids), gated.forward_logits(ids))


def test_parameter_names_roles_and_shapes_with_gqa():
    model, spec, _ = build_model(micro_stack(enable=["sparse_attn_gate"]), seed=0)
    assert spec.num_heads == 4 and spec.num_kv_heads == 2
    added = {n: p for n, p in model.named_parameters() if "output_transforms" in n}
    assert sorted(added) == [f"blocks.{i}.attn.output_transforms.0.attn_gate_w" for i in range(2)]
    assert all(p.shape == (4, 12) and role_of(n, p) == "scalar" for n, p in added.items())
    # Control tensor: float32 on the GPU and in the core quantizer's passthrough.
    assert all(is_control_tensor(n) for n in added)


@pytest.mark.parametrize("other", ["gated_attn", "attn_out_gate"])
def test_conflicts_with_the_other_head_output_gates(other):
    with pytest.raises(StackError, match="conflicts"):
        micro_stack(enable=["sparse_attn_gate", other])


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["sparse_attn_gate"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
