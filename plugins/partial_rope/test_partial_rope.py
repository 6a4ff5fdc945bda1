"""Partial RoPE: the tail is untouched, the slice matches a complex-number reference, relative-position invariance."""

from __future__ import annotations

import pytest
import torch

from golf_core.errors import GolfError
from golf_core.model.gpt import apply_rotary
from golf_core.stack import StackError
from golf_core.testing import build_model, micro_stack, run_micro

DIMS = 8  # micro model: head dim 16


def rotary_of(dims=DIMS):
    model, spec, _ = build_model(micro_stack(enable=["partial_rope"], overrides=[f"techniques.partial_rope.dims={dims}"]), seed=0)
    return model, spec


def test_spec_and_frequencies():
    model, spec = rotary_of()
    assert spec.rope_dims == DIMS
    for block in model.blocks:
        expected = torch.tensor([10000.0 ** (-2 * j / DIMS) for j in range(DIMS // 2)])
        torch.testing.assert_close(block.attn.rotary.inv_freq, expected)


def test_tail_untouched_and_slice_matches_complex_rotation():
    model, _ = rotary_of()
    cos, sin = model.blocks[0].attn.rotary(12, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))  # [B, H, T, D] as in the core
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., DIMS:], x[..., DIMS:])
    half = DIMS // 2
    theta = torch.arange(12, dtype=torch.float64)[:, None] * torch.tensor([10000.0 ** (-2 * j / DIMS) for j in range(half)], dtype=torch.float64)
    z = torch.complex(x[..., :half].double(), x[..., half:DIMS].double()) * torch.exp(-1j * theta)
    torch.testing.assert_close(out[..., :half].double(), z.real, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[..., half:DIMS].double(), z.imag, rtol=1e-5, atol=1e-5)


def test_rotated_slice_dot_products_depend_only_on_relative_position():
    model, _ = rotary_of()
    cos, sin = model.blocks[0].attn.rotary(64, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    rq = apply_rotary(q.expand(1, 1, 64, 16), cos, sin)[0, 0, :, :DIMS].double()
    rk = apply_rotary(k.expand(1, 1, 64, 16), cos, sin)[0, 0, :, :DIMS].double()
    for t, s, delta in [(5, 2, 17), (30, 30, 9), (3, 40, 11)]:
        torch.testing.assert_close(rq[t + delta] @ rk[s + delta], rq[t] @ rk[s], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(rq[7] @ rk[2], rq[7] @ rk[5])  # but it does depend on t - s


def test_full_width_is_the_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack(), seed=0)
    full, _ = rotary_of(16)
    partial, _ = rotary_of(DIMS)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # random weights everywhere, the same in all three models
        for (_, a), (_, b), (_, c) in zip(core.named_parameters(), full.named_parameters(), partial.named_parameters(), strict=True):
            value = torch.randn(a.shape, generator=g) * 0.2
            for p in (a, b, c):
                p.copy_(value)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.forward_logits(ids), full.forward_logits(ids))
    assert not torch.equal(core.forward_logits(ids), partial.forward_logits(ids))


def test_invalid_dims_are_refused():
    with pytest.raises(StackError, match="dims"):
        micro_stack(enable=["partial_rope"], overrides=["techniques.partial_rope.dims=7"])
    with pytest.raises(GolfError, match="techniques.partial_rope.dims=32"):
        rotary_of(32)


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["partial_rope"], overrides=[f"techniques.partial_rope.dims={DIMS}"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
