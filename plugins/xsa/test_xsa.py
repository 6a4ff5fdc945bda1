"""XSA: orthogonal to the own value, idempotent, equal to a repeat_interleave reference, wired on the last N layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.testing import build_model, micro_stack, run_micro
from plugins.xsa.module import ExclusiveSelfAttention, xsa_layers


def random_yv(heads=8, kv_heads=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, heads, 16, generator=g), torch.randn(2, 5, kv_heads, 16, generator=g)


def reference_xsa(y, v):
    """Expand the KV heads to the query heads with repeat_interleave, then project per head."""
    v_rep = v.repeat_interleave(y.size(2) // v.size(2), dim=2)
    out = torch.empty_like(y)
    for b, t, h in torch.cartesian_prod(*(torch.arange(n) for n in y.shape[:3])).tolist():
        unit = v_rep[b, t, h] / v_rep[b, t, h].norm()
        out[b, t, h] = y[b, t, h] - torch.dot(y[b, t, h], unit) * unit
    return out


@pytest.mark.parametrize("heads,kv_heads", [(8, 4), (8, 8), (8, 1), (6, 2)])
def test_equals_repeat_interleave_reference(heads, kv_heads):
    y, v = random_yv(heads, kv_heads)
    torch.testing.assert_close(ExclusiveSelfAttention()(y, v, None), reference_xsa(y, v), rtol=1e-5, atol=1e-6)


def test_output_is_orthogonal_to_own_value_and_idempotent():
    y, v = random_yv()
    xsa = ExclusiveSelfAttention()
    out = xsa(y, v, None)
    v_hat = F.normalize(v.repeat_interleave(2, dim=2), dim=-1)
    assert (out * v_hat).sum(-1).abs().max() < 1e-5
    assert (y * v_hat).sum(-1).abs().min() > 1e-4  # the input was not already orthogonal
    torch.testing.assert_close(xsa(out, v, None), out, rtol=1e-5, atol=1e-6)
    # The component orthogonal to v is untouched: out + (y . v̂) v̂ == y.
    torch.testing.assert_close(out + (y * v_hat).sum(-1, keepdim=True) * v_hat, y, rtol=1e-5, atol=1e-6)


def test_layer_selection():
    assert xsa_layers(11, 11) == list(range(11))
    assert xsa_layers(11, 4) == [7, 8, 9, 10]
    assert xsa_layers(11, -1) == list(range(11))
    assert xsa_layers(2, 11) == [0, 1]


def test_invalid_last_n_is_refused():
    from golf_core.stack import StackError

    with pytest.raises(StackError, match="last_n"):
        micro_stack(enable=["xsa"], overrides=["techniques.xsa.last_n=0"])


def test_in_model_the_projection_input_is_orthogonal_to_own_value_on_the_last_layer_only():
    model, _, _ = build_model(micro_stack(enable=["xsa"], overrides=["techniques.xsa.last_n=1"]), seed=0)
    core, _, _ = build_model(micro_stack(), seed=0)
    # No parameters, no RNG: the core initialisation is untouched.
    assert all(torch.equal(p, q) for (_, p), (_, q) in zip(model.named_parameters(), core.named_parameters(), strict=True))
    assert [len(b.attn.output_transforms) for b in model.blocks] == [0, 1]
    captured = {}
    for i, block in enumerate(model.blocks):
        attn = block.attn
        attn.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(("x", i), args[0]))
        attn.proj.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(("y", i), args[0]))
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    model.forward_logits(ids)
    for i, block in enumerate(model.blocks):
        attn = block.attn
        v = attn.c_v(captured[("x", i)]).reshape(2, 16, attn.num_kv_heads, attn.head_dim)
        v_hat = F.normalize(v.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=2), dim=-1)
        y = captured[("y", i)].reshape(2, 16, attn.num_heads, attn.head_dim)
        dots = (y * v_hat).sum(-1).abs().max()
        assert (dots < 1e-5) if i == 1 else (dots > 1e-3)


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["xsa"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
