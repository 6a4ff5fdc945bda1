"""The baseline GPT: parameter count and names of the reference, initialization, causality, RoPE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from golf_core.model.gpt import GPT, Rotary, apply_rotary, softcapped_cross_entropy
from golf_core.model.spec import ModelSpec
from golf_core.stack import resolve
from golf_core.testing import build_model, catalog, micro_stack

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "stacks" / "baseline.toml"
REFERENCE_PARAMS_VOCAB_1024 = 17_059_912


@pytest.fixture(scope="module")
def baseline():
    stack = resolve(BASELINE if BASELINE.is_file() else None, catalog(), overrides=["model.vocab_size=1024"])
    model, spec, _ = build_model(stack, seed=0)
    return model, spec


def reference_parameter_names(num_layers: int) -> list[str]:
    """The reference's named_parameters() order: the GPT's own tensor, then modules in creation order."""
    names = ["skip_weights", "tok_emb.weight"]
    for i in range(num_layers):
        names += [
            f"blocks.{i}.attn_scale",
            f"blocks.{i}.mlp_scale",
            f"blocks.{i}.resid_mix",
            f"blocks.{i}.attn.q_gain",
            f"blocks.{i}.attn.c_q.weight",
            f"blocks.{i}.attn.c_k.weight",
            f"blocks.{i}.attn.c_v.weight",
            f"blocks.{i}.attn.proj.weight",
            f"blocks.{i}.mlp.fc.weight",
            f"blocks.{i}.mlp.proj.weight",
        ]
    return names


def test_baseline_parameter_count_matches_the_reference(baseline) -> None:
    model, _ = baseline
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS_VOCAB_1024


def test_baseline_parameter_names_and_shapes_match_the_reference(baseline) -> None:
    model, spec = baseline
    assert (spec.num_layers, spec.model_dim, spec.num_heads, spec.num_kv_heads, spec.vocab_size) == (9, 512, 8, 4, 1024)
    params = dict(model.named_parameters())
    assert list(params) == reference_parameter_names(9)
    shapes = {
        "skip_weights": (4, 512),
        "tok_emb.weight": (1024, 512),
        "blocks.0.resid_mix": (2, 512),
        "blocks.0.attn.q_gain": (8,),
        "blocks.0.attn.c_q.weight": (512, 512),
        "blocks.0.attn.c_k.weight": (256, 512),
        "blocks.0.attn.c_v.weight": (256, 512),
        "blocks.0.attn.proj.weight": (512, 512),
        "blocks.0.mlp.fc.weight": (1024, 512),
        "blocks.0.mlp.proj.weight": (512, 1024),
    }
    for name, shape in shapes.items():
        assert tuple(params[name].shape) == shape, name
    assert model.lm_head is None  # tied embeddings


def test_initialization(baseline) -> None:
    model, _ = baseline
    for i, block in enumerate(model.blocks):
        assert torch.count_nonzero(block.attn.proj.weight) == 0, f"block {i} attn.proj is not zero-initialized"
        assert torch.count_nonzero(block.mlp.proj.weight) == 0, f"block {i} mlp.proj is not zero-initialized"
        assert torch.count_nonzero(block.attn.c_q.weight) > 0
        assert torch.all(block.attn.q_gain == 1.5)
        assert torch.all(block.attn_scale == 1) and torch.all(block.mlp_scale == 1)
        assert torch.all(block.resid_mix[0] == 1) and torch.all(block.resid_mix[1] == 0)
    assert torch.all(model.skip_weights == 1)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.005, rel=0.02)


def _randomized_micro_model(seed: int = 0, **spec_changes) -> GPT:
    stack = micro_stack()
    spec = ModelSpec.from_config(stack.core.model)
    for key, value in spec_changes.items():
        setattr(spec, key, value)
    torch.manual_seed(seed)
    model = GPT(spec)
    # The zero-initialized projections make every block a no-op at init, which would make any
    # model trivially causal; give every tensor random values so attention really mixes tokens.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def test_forward_is_causal() -> None:
    model = _randomized_micro_model()
    torch.manual_seed(1)
    x = torch.randint(0, 1024, (2, 32))
    t = 11
    changed = x.clone()
    changed[:, t + 1] = (x[:, t + 1] + 1) % 1024
    with torch.no_grad():
        a, b = model.forward_logits(x), model.forward_logits(changed)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # later positions do see the change


def test_forward_loss_matches_the_logits() -> None:
    model = _randomized_micro_model()
    torch.manual_seed(2)
    x, y = torch.randint(0, 1024, (2, 16)), torch.randint(0, 1024, (2, 16))
    with torch.no_grad():
        loss = model(x, y)
        logits = model.forward_logits(x)  # already softcapped
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 1024), y.reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    softcap = model.logit_softcap
    assert logits.abs().max() <= softcap
    raw = torch.randn(5, 7) * 100
    targets = torch.arange(5)
    capped = softcap * torch.tanh(raw / softcap)
    assert softcapped_cross_entropy(raw, targets, softcap).item() == pytest.approx(
        (-(capped.log_softmax(-1)[torch.arange(5), targets])).mean().item(), rel=1e-6
    )


def test_partial_rope_passes_the_tail_dims_through() -> None:
    head_dim, rope_dims, seq = 16, 4, 9
    rotary = Rotary(rope_dims, base=10000.0)
    assert rotary.inv_freq.numel() == rope_dims // 2
    cos, sin = rotary(seq, torch.device("cpu"), torch.float32)
    torch.manual_seed(3)
    x = torch.randn(2, 3, seq, head_dim)
    y = apply_rotary(x, cos, sin)
    assert torch.equal(y[..., rope_dims:], x[..., rope_dims:])
    assert torch.equal(y[..., 0, :], x[..., 0, :])  # position 0: rotation by angle 0
    # Independent rotation of the pairs (i, i + rope_dims/2) by angle pos * base^(-2i/rope_dims).
    half = rope_dims // 2
    for pos in (1, 5, 8):
        for i in range(half):
            angle = pos * 10000.0 ** (-2 * i / rope_dims)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., pos, i], x[..., pos, i + half]
            torch.testing.assert_close(y[..., pos, i], a * c + b * s)
            torch.testing.assert_close(y[..., pos, i + half], -a * s + b * c)
    # Relative positions: the rotated dot product depends only on the offset.
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    rot = lambda v, p: apply_rotary(v.expand(1, 1, seq, head_dim).clone(), cos, sin)[0, 0, p]  # noqa: E731
    assert (rot(q, 5) @ rot(k, 2)).item() == pytest.approx((rot(q, 7) @ rot(k, 4)).item(), rel=1e-5)


def test_partial_rope_in_the_model() -> None:
    model = _randomized_micro_model(rope_dims=8)
    assert all(block.attn.rotary.inv_freq.numel() == 4 for block in model.blocks)
    full = _randomized_micro_model()
    assert full.blocks[0].attn.rotary.inv_freq.numel() == full.spec.head_dim // 2
    x = torch.randint(0, 1024, (1, 16))
    with torch.no_grad():
        assert not torch.allclose(model.forward_logits(x), full.forward_logits(x))


def test_untied_head_and_spec_checks() -> None:
    stack = micro_stack(overrides=["model.tie_embeddings=false"])
    model, spec, _ = build_model(stack)
    assert isinstance(model.lm_head, nn.Linear) and torch.count_nonzero(model.lm_head.weight) == 0
    bad = ModelSpec.from_config(stack.core.model)
    bad.num_heads = 5
    assert any("not divisible by model.num_heads" in p for p in bad.check())
    bad = ModelSpec.from_config(stack.core.model)
    bad.rope_dims = 3
    assert any("rope_dims=3" in p for p in bad.check())
