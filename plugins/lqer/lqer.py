"""LQER math: a rank-r correction ``A @ B`` of a quantized matrix's error, stored in 2/4 bits.

For a quantized matrix with error ``E = W - deq(Q)``: ``E = U S V^T`` (thin SVD), ``A = U_r S_r``
(rows x r), ``B = V_r^T`` (r x cols). The asymmetric packing of PR #1797 stores ``A`` in int2 with one
float16 scale for the whole matrix (``s_A = max|A| / 1.5``, codes ``clamp(round(A/s_A), -2, 1)``) and
``B`` in int4 over groups of ``g`` consecutive row-major elements (``s_g = max|B_g| / 7.5``, codes
``clamp(round(B/s_g), -8, 7)``). When ``B.numel()`` is not a multiple of ``g`` the record falls back
to symmetric per-row packing of both factors at ``factor_bits`` (codes in ``+-(2^(bits-1) - 1)``).

Dequantization: ``W ~ deq(Q) + (q_A s_A) @ (q_B s_B)``, registered as the schemes ``lqer_asym`` and
``lqer_sym`` around the base scheme named in the entry's meta.
"""

from __future__ import annotations

import torch
from torch import Tensor

from golf_core.quant.state import DEQUANTIZERS, QuantizedTensor, register_scheme

FP16_SMALLEST = 2.0**-24

FACTOR_KEYS = ("lqA", "lqAs", "lqB", "lqBs")


def _fp16_positive(s: Tensor) -> Tensor:
    s16 = s.to(torch.float16)
    return torch.where(s16 > 0, s16, torch.full_like(s16, FP16_SMALLEST))


def low_rank_factors(E: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``A [rows, r]``, ``B [r, cols]`` with ``A @ B`` the best rank-``r`` approximation of ``E``."""
    U, S, Vh = torch.linalg.svd(E.float(), full_matrices=False)
    r = min(rank, S.numel())
    return (U[:, :r] * S[:r]).contiguous(), Vh[:r, :].contiguous()


def pack_asym(A: Tensor, B: Tensor, group: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """int2 ``A`` with one fp16 scale; int4 ``B`` with one fp16 scale per ``group`` row-major elements."""
    sA = _fp16_positive(A.abs().amax() / 1.5)
    qA = torch.clamp(torch.round(A / sA.float()), -2, 1).to(torch.int8)
    Bg = B.reshape(-1, group)
    sB = _fp16_positive(Bg.abs().amax(dim=1) / 7.5)
    qB = torch.clamp(torch.round(Bg / sB.float()[:, None]), -8, 7).to(torch.int8).reshape(B.shape)
    return qA.contiguous(), sA.contiguous(), qB.contiguous(), sB.contiguous()


def pack_sym(A: Tensor, B: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both factors per row, symmetric ``bits``-bit codes (the record's fallback)."""
    r = 2 ** (bits - 1) - 1
    sA = _fp16_positive(A.abs().amax(dim=1) / r)
    sB = _fp16_positive(B.abs().amax(dim=1) / r)
    qA = torch.clamp(torch.round(A / sA.float()[:, None]), -r, r).to(torch.int8)
    qB = torch.clamp(torch.round(B / sB.float()[:, None]), -r, r).to(torch.int8)
    return qA.contiguous(), sA.contiguous(), qB.contiguous(), sB.contiguous()


def correction(qt: QuantizedTensor) -> Tensor:
    """The dequantized low-rank term ``(q_A s_A) @ (q_B s_B)`` of an LQER entry."""
    qA, sA, qB, sB = (qt.tensors[k] for k in FACTOR_KEYS)
    if qt.scheme == "lqer_asym":
        A = qA.float() * sA.float()
        group = qB.numel() // sB.numel()
        B = (qB.reshape(-1, group).float() * sB.float()[:, None]).reshape(qB.shape)
    else:
        A = qA.float() * sA.float()[:, None]
        B = qB.float() * sB.float()[:, None]
    return A @ B


def base_entry(qt: QuantizedTensor) -> QuantizedTensor:
    """The entry as it was before LQER (its own scheme, payload and route)."""
    tensors = {k: v for k, v in qt.tensors.items() if k not in FACTOR_KEYS}
    meta = {k: v for k, v in qt.meta.items() if not k.startswith("lqer_")}
    return QuantizedTensor(qt.meta["lqer_base_scheme"], qt.shape, qt.dtype, tensors, route=qt.meta["lqer_base_route"], meta=meta)


def attach(qt: QuantizedTensor, E: Tensor, *, rank: int, asym: bool, group: int, factor_bits: int) -> QuantizedTensor:
    """``qt`` plus the packed rank-``rank`` factors of its error ``E``; route gains ``+lqer_asym``/``+lqer``."""
    A, B = low_rank_factors(E, rank)
    if asym and B.numel() % group == 0:
        scheme, suffix, packed = "lqer_asym", "+lqer_asym", pack_asym(A, B, group)
    else:
        scheme, suffix, packed = "lqer_sym", "+lqer", pack_sym(A, B, factor_bits)
    tensors = dict(qt.tensors)
    tensors.update({k: v.cpu() for k, v in zip(FACTOR_KEYS, packed, strict=True)})
    meta = {**qt.meta, "lqer_base_scheme": qt.scheme, "lqer_base_route": qt.route, "lqer_rank": int(A.shape[1])}
    return QuantizedTensor(scheme, qt.shape, qt.dtype, tensors, route=qt.route + suffix, meta=meta)


def _dequant_lqer(qt: QuantizedTensor) -> Tensor:
    base = base_entry(qt)
    W = DEQUANTIZERS[base.scheme](base).float().reshape(qt.shape)
    return W + correction(qt)


register_scheme("lqer_asym")(_dequant_lqer)
register_scheme("lqer_sym")(_dequant_lqer)
