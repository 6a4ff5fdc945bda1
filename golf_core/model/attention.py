"""Causal self-attention kernels: dense rows, or packed documents kept apart by ``cu_seqlens``.

Layouts. :func:`causal_attention` takes SDPA's layout, ``q`` ``[B, H, T, D]`` and ``k``/``v``
``[B, H_kv, T, D]`` (grouped-query attention when ``H_kv < H``), and returns ``[B, T, H, D]``.
:func:`varlen_attention` takes FlashAttention's packed layout, ``[N, H, D]`` / ``[N, H_kv, D]``
with ``N`` tokens, and returns ``[N, H, D]``.

Document isolation (PR #1530). ``cu_seqlens`` is an int32 vector of segment starts in the
flattened ``B * T`` token stream followed by ``N`` (the total); a token attends causally to the
tokens of its own segment only. Trailing copies of ``N`` are empty segments: loaders pad the vector
to a multiple of a bucket size so that a compiled graph sees a few shapes only. Row starts
(``b * T``) must be segment starts when ``B > 1``. ``max_seqlen`` (a Python int) bounds every
segment's length; the loader splits longer documents (at ``train_seq_len`` in the records).

Kernels for document-isolated attention, chosen when the graph is traced (a Python decision on
the device and dtype, so ``torch.compile`` keeps one graph and calls the kernel directly):

``fa3``           ``flash_attn_interface.flash_attn_varlen_func`` (FlashAttention-3), when it is
                  installed; CUDA, bf16/fp16.
``torch_varlen``  ``torch.nn.attention.varlen.varlen_attn`` (torch >= 2.10); CUDA, bf16/fp16.
                  Causal is ``window_size=(-1, 0)`` from torch 2.11, ``is_causal=True`` in 2.10.
``sdpa_mask``     ``F.scaled_dot_product_attention`` with a block-diagonal causal mask built from
                  ``cu_seqlens``: any device and dtype (CPU, float32 evaluation, older torch). It
                  materializes an ``[N, N]`` mask, so it is meant for tests and small batches.

Dense rows (no ``cu_seqlens``) always use SDPA with ``is_causal=True``: the baseline's call, so a
model that never sees ``cu_seqlens`` computes exactly what it did before this module existed.

``set_backend(name)`` (or the environment variable ``GOLF_ATTENTION``) forces one kernel, which
benchmarks use to run golf and a reference script on the same kernel.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from golf_core.errors import GolfError

BACKENDS = ("auto", "fa3", "torch_varlen", "sdpa_mask")

# The keyword arguments a loader's attention metadata may carry into ``model(x, y, **attn_meta)``.
ATTN_META_KEYS = ("cu_seqlens", "max_seqlen")

try:  # FlashAttention-3 (Hopper); absent on most machines
    from flash_attn_interface import flash_attn_varlen_func as _fa3_varlen
except ImportError:  # pragma: no cover - depends on the machine
    _fa3_varlen = None

try:
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen
except ImportError:  # torch < 2.10
    _torch_varlen = None

if _torch_varlen is not None:
    _VARLEN_PARAMS = frozenset(inspect.signature(_torch_varlen).parameters)
else:
    _VARLEN_PARAMS = frozenset()

_forced: str = "auto"


def set_backend(name: str | None) -> None:
    """Force the kernel for document-isolated attention (``auto`` or ``None`` = pick per call)."""
    global _forced
    name = name or "auto"
    if name not in BACKENDS:
        raise GolfError(f"attention backend {name!r} is not one of {', '.join(BACKENDS)}")
    if name == "fa3" and _fa3_varlen is None:
        raise GolfError("attention backend 'fa3' needs flash_attn_interface (FlashAttention-3); install it or use 'torch_varlen'")
    if name == "torch_varlen" and _torch_varlen is None:
        raise GolfError(f"attention backend 'torch_varlen' needs torch >= 2.10 (torch.nn.attention.varlen); this is torch {torch.__version__}")
    _forced = name


def get_backend() -> str:
    """The forced kernel name, or ``auto``."""
    return _forced


def available_backends() -> list[str]:
    """Kernels this installation can run for document-isolated attention (on CUDA for the first two)."""
    return [name for name, ok in (("fa3", _fa3_varlen is not None), ("torch_varlen", _torch_varlen is not None), ("sdpa_mask", True)) if ok]


def varlen_backend(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel :func:`varlen_attention` uses for inputs on ``device`` in ``dtype``."""
    flash_ok = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    if _forced != "auto":
        # A forced flash kernel still cannot run float32 or CPU inputs (float32 evaluation of a
        # packed batch, say): those take the mask path, which computes the same function.
        return _forced if (_forced == "sdpa_mask" or flash_ok) else "sdpa_mask"
    if flash_ok and _fa3_varlen is not None:
        return "fa3"
    if flash_ok and _torch_varlen is not None:
        return "torch_varlen"
    return "sdpa_mask"


def segment_ids(cu_seqlens: Tensor, n: int) -> Tensor:
    """Index of the segment each of the ``n`` packed positions belongs to (padding entries ignored)."""
    positions = torch.arange(n, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens, positions, right=True)


def block_causal_mask(cu_seqlens: Tensor, n: int) -> Tensor:
    """``[n, n]`` bool: query i may attend to key j iff j <= i and both lie in the same segment."""
    seg = segment_ids(cu_seqlens, n)
    positions = torch.arange(n, device=cu_seqlens.device)
    return (seg[:, None] == seg[None, :]) & (positions[:, None] >= positions[None, :])


def _sdpa_mask(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor) -> Tensor:
    n, heads = q.size(0), q.size(1)
    mask = block_causal_mask(cu_seqlens, n)
    # SDPA's layout is [batch, heads, tokens, dim]; the packed tokens form one "row".
    y = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        attn_mask=mask, enable_gqa=k.size(1) != heads,
    )
    return y[0].transpose(0, 1)


def _torch_varlen_call(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
    kwargs = {}
    if "window_size" in _VARLEN_PARAMS:  # torch >= 2.11: causal = no look-ahead window
        kwargs["window_size"] = (-1, 0)
    else:  # torch 2.10
        kwargs["is_causal"] = True
    if k.size(1) != q.size(1):
        if "enable_gqa" in _VARLEN_PARAMS:
            kwargs["enable_gqa"] = True
        else:  # a version without the flag: give every query head its own copy of its KV head
            group = q.size(1) // k.size(1)
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return _torch_varlen(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **kwargs)


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
    """Causal attention within the segments of ``cu_seqlens``; packed ``[N, H, D]`` in and out.

    Softmax scale ``1/sqrt(D)``. ``q`` may have more heads than ``k``/``v`` (grouped-query).
    """
    if q.size(1) % k.size(1):
        raise GolfError(f"varlen attention: {q.size(1)} query heads is not a multiple of {k.size(1)} key/value heads")
    backend = varlen_backend(q.device, v.dtype)
    if backend == "sdpa_mask":
        return _sdpa_mask(q, k, v, cu_seqlens)
    # The flash kernels want one half-precision dtype and unit-stride rows.
    q, k, v = q.to(v.dtype).contiguous(), k.to(v.dtype).contiguous(), v.contiguous()
    cu_seqlens = cu_seqlens.to(torch.int32)
    if backend == "fa3":
        out = _fa3_varlen(
            q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
            max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen, causal=True,
        )
        return out[0] if isinstance(out, tuple) else out  # some FA3 builds also return the LSE
    return _torch_varlen_call(q, k, v, cu_seqlens, max_seqlen)


def dense_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention over whole rows; SDPA layout in (``[B, H, T, D]``), ``[B, T, H, D]`` out."""
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True, enable_gqa=k.size(1) != q.size(1))
    return y.transpose(1, 2)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
    """Causal self-attention; document-isolated when ``cu_seqlens`` is given. ``[B, T, H, D]`` out."""
    if cu_seqlens is None:
        return dense_causal_attention(q, k, v)
    bsz, heads, seqlen, dim = q.shape
    # [B, H, T, D] views of [B, T, H, D] memory (how the model produces them) pack without a copy.
    packed = [t.transpose(1, 2).reshape(bsz * seqlen, t.size(1), dim) for t in (q, k, v)]
    y = varlen_attention(*packed, cu_seqlens, int(max_seqlen) if max_seqlen else seqlen)
    return y.view(bsz, seqlen, heads, dim)


class AttentionScope:
    """The document boundaries of the forward pass in progress, shared by a model's attention layers.

    ``GPT.hidden`` sets it from its ``cu_seqlens`` / ``max_seqlen`` arguments before running the
    blocks and clears it afterwards; every ``CausalSelfAttention`` of the model reads it. This
    carries the batch's boundaries to attention through any residual form (sequential blocks,
    parallel lanes, adapters) without each of them passing an extra argument; under
    ``torch.compile`` the writes are traced side effects and the tensor stays a graph input.
    """

    def __init__(self) -> None:
        self.cu_seqlens: Tensor | None = None
        self.max_seqlen: int = 0


if os.environ.get("GOLF_ATTENTION"):
    set_backend(os.environ["GOLF_ATTENTION"])

__all__ = [
    "ATTN_META_KEYS", "AttentionScope", "BACKENDS", "available_backends", "block_causal_mask", "causal_attention",
    "dense_causal_attention", "get_backend", "segment_ids", "set_backend", "varlen_attention", "varlen_backend",
]
