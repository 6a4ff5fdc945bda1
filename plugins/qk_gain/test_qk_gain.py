"""QK-gain: the init lands in every head's gain, and the gain is the attention temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf_core.model.gpt import apply_rotary
from golf_core.stack import StackError
from golf_core.testing import build_model, micro_stack, run_micro


def test_every_head_starts_at_the_init_value():
    model, spec, _ = build_model(micro_stack(enable=["qk_gain"]), seed=0)
    assert spec.qk_gain_init == 5.0
    for block in model.blocks:
        assert torch.equal(block.attn.q_gain, torch.full((4,), 5.0))
    model, _, _ = build_model(micro_stack(enable=["qk_gain"], overrides=["techniques.qk_gain.init=5.25"]), seed=0)
    assert torch.equal(model.blocks[0].attn.q_gain, torch.full((4,), 5.25))


def reference_attention(attn, x):
    """softmax(g_h (q̂ . k̂) / sqrt(D)) over the causal past, written out with explicit scores."""
    bsz, seqlen, _ = x.shape
    heads, kv_heads, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = F.rms_norm(attn.c_q(x).reshape(bsz, seqlen, heads, d), (d,)).transpose(1, 2)
    k = F.rms_norm(attn.c_k(x).reshape(bsz, seqlen, kv_heads, d), (d,)).transpose(1, 2)
    v = attn.c_v(x).reshape(bsz, seqlen, kv_heads, d).transpose(1, 2)
    cos, sin = attn.rotary(seqlen, x.device, x.dtype)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
    scores = attn.q_gain[None, :, None, None] * (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(torch.ones(seqlen, seqlen, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(bsz, seqlen, heads * d)
    return attn.proj(y)


def test_gain_is_the_attention_temperature():
    model, _, _ = build_model(micro_stack(enable=["qk_gain"]), seed=0)
    attn = model.blocks[0].attn
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        attn.proj.weight.normal_(generator=g)
        attn.q_gain.copy_(torch.tensor([5.0, 0.5, 2.0, 8.0]))
    x = torch.randn(2, 12, 64, generator=g)
    torch.testing.assert_close(attn(x), reference_attention(attn, x), rtol=1e-4, atol=1e-5)


def test_baseline_value_reproduces_the_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack(), seed=0)
    same, _, _ = build_model(micro_stack(enable=["qk_gain"], overrides=["techniques.qk_gain.init=1.5"]), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for (name, a), (_, b) in zip(core.named_parameters(), same.named_parameters(), strict=True):
            if "q_gain" not in name:  # keep the gains at their init
                value = torch.randn(a.shape, generator=g) * 0.2
                a.copy_(value)
                b.copy_(value)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.forward_logits(ids), same.forward_logits(ids))


def test_non_positive_gain_is_refused():
    with pytest.raises(StackError, match="init"):
        micro_stack(enable=["qk_gain"], overrides=["techniques.qk_gain.init=0.0"])


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["qk_gain"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
