"""LN scale: factor table, sublayer inputs against a recomputation, identity of a one-block model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from golf_core.testing import build_model, micro_stack, run_micro
from plugins.ln_scale import ln_scale_factor

FOUR_LAYERS = ["model.num_layers=4"]


def test_factor_table():
    assert [ln_scale_factor(i) for i in range(4)] == [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5]


def capture_inputs(model, ids):
    """Per physical block: the block's (x, x0) input and what attention and the MLP received."""
    seen: dict[tuple[str, int], tuple] = {}
    handles = []
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("block", i), a)))
        handles.append(block.attn.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("attn", i), a[0])))
        handles.append(block.mlp.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("mlp", i), a[0])))
        handles.append(block.attn.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("attn_out", i), out)))
    with torch.no_grad():
        model.forward_logits(ids)
    for h in handles:
        h.remove()
    return seen


def test_sublayer_inputs_are_scaled_norms():
    model, _, _ = build_model(micro_stack(["ln_scale"], FOUR_LAYERS))
    with torch.no_grad():  # move resid_mix off its init so x0 matters
        for block in model.blocks:
            block.resid_mix[1].fill_(0.3)
            block.mlp.proj.weight.normal_(0, 0.02)
            block.attn.proj.weight.normal_(0, 0.02)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    seen = capture_inputs(model, ids)
    for i, block in enumerate(model.blocks):
        x, x0 = seen[("block", i)][:2]
        s = 1.0 / math.sqrt(i + 1)
        x_in = block.resid_mix[0] * x + block.resid_mix[1] * x0
        expected_attn = F.rms_norm(x_in, (x_in.size(-1),)) * s
        torch.testing.assert_close(seen[("attn", i)], expected_attn, rtol=1e-6, atol=1e-6)
        after_attn = x_in + block.attn_scale * seen[("attn_out", i)]
        expected_mlp = F.rms_norm(after_attn, (after_attn.size(-1),)) * s
        torch.testing.assert_close(seen[("mlp", i)], expected_mlp, rtol=1e-5, atol=1e-6)
        for key in ("attn", "mlp"):
            rms = seen[(key, i)].pow(2).mean(-1).sqrt()
            torch.testing.assert_close(rms, torch.full_like(rms, s), rtol=1e-4, atol=0)


def test_one_block_model_equals_core_bit_for_bit():
    # Layer 0's factor is exactly 1, so a one-block model must not change at all.
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(1))
    core, _, _ = build_model(micro_stack([], ["model.num_layers=1"]), seed=3)
    scaled, _, _ = build_model(micro_stack(["ln_scale"], ["model.num_layers=1"]), seed=3)
    with torch.no_grad():
        assert torch.equal(core.forward_logits(ids), scaled.forward_logits(ids))
    # ... while deeper blocks do change.
    core, _, _ = build_model(micro_stack([], FOUR_LAYERS), seed=3)
    scaled, _, _ = build_model(micro_stack(["ln_scale"], FOUR_LAYERS), seed=3)
    with torch.no_grad():
        for m in (core, scaled):
            for block in m.blocks:
                block.attn.proj.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(5))
        assert not torch.equal(core.forward_logits(ids), scaled.forward_logits(ids))


def test_micro_run(tmp_path):
    report = run_micro(tmp_path, enable=["ln_scale"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
