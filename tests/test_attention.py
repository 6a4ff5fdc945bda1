"""Attention kernels (golf_core.model.attention): document isolation against per-document SDPA.

The reference for every check is the slow direct computation: each document run on its own
through ``F.scaled_dot_product_attention(is_causal=True)``, the outputs concatenated.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.errors import GolfError
from golf_core.model import attention
from golf_core.model.attention import (
    block_causal_mask,
    causal_attention,
    dense_causal_attention,
    set_backend,
    varlen_attention,
    varlen_backend,
)
from golf_core.testing import build_model, micro_stack


@pytest.fixture(autouse=True)
def _auto_backend():
    yield
    set_backend("auto")


def per_document_reference(q, k, v, bounds):
    """Packed ``[N, H, D]`` inputs; each ``(start, end)`` document attended alone with SDPA."""
    outs = []
    for start, end in bounds:
        qs, ks, vs = (t[start:end].transpose(0, 1)[None] for t in (q, k, v))
        y = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=k.size(1) != q.size(1))
        outs.append(y[0].transpose(0, 1))
    return torch.cat(outs, dim=0)


def padded_cu(bounds, bucket=16):
    starts = [s for s, _ in bounds] + [bounds[-1][1]]
    cu = torch.full((-(-len(starts) // bucket) * bucket,), bounds[-1][1], dtype=torch.int32)
    cu[: len(starts)] = torch.tensor(starts, dtype=torch.int32)
    return cu


BOUNDS = [(0, 7), (7, 8), (8, 30), (30, 31), (31, 50)]  # includes one-token documents


def test_block_causal_mask_hand_worked():
    # segments [0, 2) and [2, 5) of 5 tokens, padded with the total
    mask = block_causal_mask(torch.tensor([0, 2, 5, 5], dtype=torch.int32), 5)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_mask_path_equals_per_document_sdpa(kv_heads):
    torch.manual_seed(0)
    n, heads, dim = BOUNDS[-1][1], 4, 8
    q = torch.randn(n, heads, dim, requires_grad=True)
    k = torch.randn(n, kv_heads, dim, requires_grad=True)
    v = torch.randn(n, kv_heads, dim, requires_grad=True)
    assert varlen_backend(q.device, q.dtype) == "sdpa_mask"
    out = varlen_attention(q, k, v, padded_cu(BOUNDS), max_seqlen=22)
    ref = per_document_reference(q, k, v, BOUNDS)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_information_crosses_a_boundary():
    torch.manual_seed(1)
    n, heads, dim = 50, 2, 8
    q, k, v = torch.randn(n, heads, dim), torch.randn(n, heads, dim), torch.randn(n, heads, dim)
    cu = padded_cu(BOUNDS)
    base = varlen_attention(q, k, v, cu, 22)
    k2, v2 = k.clone(), v.clone()
    k2[8:30] += 3.0  # document 2
    v2[8:30] -= 2.0
    out = varlen_attention(q, k2, v2, cu, 22)
    assert torch.equal(out[:8], base[:8]) and torch.equal(out[30:], base[30:])
    assert not torch.allclose(out[8:30], base[8:30])
    # and the dense kernel would have leaked it: the check above can fail
    dense = dense_causal_attention(*(t.transpose(0, 1)[None] for t in (q, k2, v2)))[0]
    dense_base = dense_causal_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)))[0]
    assert not torch.allclose(dense[30:], dense_base[30:])


def test_dense_rows_are_the_baseline_sdpa_call_bit_for_bit():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 4, 16, 8), torch.randn(2, 2, 16, 8), torch.randn(2, 2, 16, 8)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True, enable_gqa=True).transpose(1, 2)
    assert torch.equal(causal_attention(q, k, v), expected)


def test_batched_rows_with_row_starts_as_boundaries():
    torch.manual_seed(3)
    bsz, heads, seqlen, dim = 2, 4, 20, 8
    q, k, v = torch.randn(bsz, heads, seqlen, dim), torch.randn(bsz, 2, seqlen, dim), torch.randn(bsz, 2, seqlen, dim)
    bounds = [(0, 5), (5, 20), (20, 33), (33, 40)]  # row 1 starts at 20
    out = causal_attention(q, k, v, padded_cu(bounds), max_seqlen=15)
    packed = [t.transpose(1, 2).reshape(bsz * seqlen, t.size(1), dim) for t in (q, k, v)]
    ref = per_document_reference(*packed, bounds).view(bsz, seqlen, heads, dim)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_backend_selection_and_forcing():
    cpu = torch.device("cpu")
    assert varlen_backend(cpu, torch.bfloat16) == "sdpa_mask"  # flash kernels are CUDA-only
    set_backend("sdpa_mask")
    assert attention.get_backend() == "sdpa_mask"
    with pytest.raises(GolfError, match="not one of"):
        set_backend("flash4")
    if attention._fa3_varlen is None:
        with pytest.raises(GolfError, match="flash_attn_interface"):
            set_backend("fa3")
    if attention._torch_varlen is not None:
        set_backend("torch_varlen")
        # a forced flash kernel cannot take float32 CPU inputs: they take the mask path
        assert varlen_backend(cpu, torch.float32) == "sdpa_mask"
        assert varlen_backend(torch.device("cuda"), torch.bfloat16) == "torch_varlen"


@pytest.mark.parametrize(
    "params, expect_kwargs, expect_kv_heads",
    [
        ({"window_size", "enable_gqa"}, {"window_size": (-1, 0), "enable_gqa": True}, 2),  # torch 2.13
        ({"window_size"}, {"window_size": (-1, 0)}, 4),  # a version with windows but no GQA flag
        ({"is_causal"}, {"is_causal": True}, 4),  # torch 2.10
    ],
)
def test_torch_varlen_call_adapts_to_the_installed_signature(monkeypatch, params, expect_kwargs, expect_kv_heads):
    calls = []

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs):
        calls.append((k.size(1), cu_q is cu_k, max_q, max_k, kwargs))
        bounds = [(int(a), int(b)) for a, b in zip(cu_q[:-1], cu_q[1:]) if b > a]
        return per_document_reference(q, k, v, bounds)

    monkeypatch.setattr(attention, "_torch_varlen", fake_varlen)
    monkeypatch.setattr(attention, "_VARLEN_PARAMS", frozenset(params))
    torch.manual_seed(4)
    q, k, v = torch.randn(50, 4, 8), torch.randn(50, 2, 8), torch.randn(50, 2, 8)
    out = attention._torch_varlen_call(q, k, v, padded_cu(BOUNDS), 22)
    assert calls == [(expect_kv_heads, True, 22, 22, expect_kwargs)]
    torch.testing.assert_close(out, per_document_reference(q, k, v, BOUNDS), rtol=1e-5, atol=1e-6)


def _noisy_model(enable=(), overrides=()):
    model, _, _ = build_model(micro_stack(list(enable), list(overrides)), seed=0)
    with torch.no_grad():  # zero-initialized projections would hide attention entirely
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


DOC_STARTS = (0, 20, 41)


def _packed_ids(total=64):
    torch.manual_seed(5)
    ids = torch.randint(2, 1000, (1, total))
    ids[0, list(DOC_STARTS)] = 1
    bounds = list(zip(DOC_STARTS, (*DOC_STARTS[1:], total)))
    return ids, bounds


@pytest.mark.parametrize(
    "enable, overrides",
    [((), ()), (("parallel_residuals",), ("techniques.parallel_residuals.start_layer=1",))],
    ids=["sequential", "parallel_lanes"],
)
def test_model_with_cu_seqlens_equals_documents_run_separately(enable, overrides):
    model = _noisy_model(enable, overrides)
    ids, bounds = _packed_ids()
    with torch.no_grad():
        packed = model.forward_logits(ids, cu_seqlens=padded_cu(bounds), max_seqlen=32)
        alone = torch.cat([model.forward_logits(ids[:, s:e]) for s, e in bounds], dim=1)
        dense = model.forward_logits(ids)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dense[:, 20:], alone[:, 20:], atol=1e-4)  # without cu_seqlens documents mix
    assert model.attn_scope.cu_seqlens is None  # cleared after the forward


def test_model_traces_fullgraph_with_and_without_cu_seqlens():
    torch._dynamo.reset()
    model = _noisy_model()
    ids, bounds = _packed_ids()
    targets = torch.randint(0, 1000, ids.shape)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    cu = padded_cu(bounds)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, targets, cu_seqlens=cu, max_seqlen=32), model(ids, targets, cu_seqlens=cu, max_seqlen=32))
        torch.testing.assert_close(compiled(ids, targets), model(ids, targets))
        other = padded_cu([(0, 10), (10, 64)])  # same shape, other boundaries: the same graph
        torch.testing.assert_close(compiled(ids, targets, cu_seqlens=other, max_seqlen=32), model(ids, targets, cu_seqlens=other, max_seqlen=32))
    torch._dynamo.reset()


@pytest.mark.cuda
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_flash_varlen_path_on_cuda_equals_per_document_sdpa(kv_heads):
    torch.manual_seed(6)
    device = torch.device("cuda")
    n, heads, dim = BOUNDS[-1][1], 4, 64
    q = torch.randn(n, heads, dim, device=device, dtype=torch.bfloat16)
    k = torch.randn(n, kv_heads, dim, device=device, dtype=torch.bfloat16)
    v = torch.randn(n, kv_heads, dim, device=device, dtype=torch.bfloat16)
    backend = varlen_backend(device, torch.bfloat16)
    assert backend in ("fa3", "torch_varlen"), f"no flash varlen kernel on this CUDA install ({backend})"
    out = varlen_attention(q, k, v, padded_cu(BOUNDS).to(device), max_seqlen=22)
    ref = per_document_reference(q.float(), k.float(), v.float(), BOUNDS)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
def test_compiled_cuda_model_with_cu_seqlens_equals_documents_run_separately():
    from golf_core.model.gpt import cast_for_device

    torch._dynamo.reset()
    device = torch.device("cuda")
    model = cast_for_device(_noisy_model(), device)
    ids, bounds = _packed_ids()
    ids = ids.to(device)
    compiled = torch.compile(model.forward_logits, fullgraph=True, dynamic=False)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        packed = compiled(ids, cu_seqlens=padded_cu(bounds).to(device), max_seqlen=32)
        alone = torch.cat([model.forward_logits(ids[:, s:e]) for s, e in bounds], dim=1)
    torch.testing.assert_close(packed, alone, rtol=5e-2, atol=5e-2)
    torch._dynamo.reset()
