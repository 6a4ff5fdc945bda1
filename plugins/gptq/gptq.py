"""GPTQ with SDClip scales: the per-matrix math, independent of any model.

``gptq_quantize_weight`` quantizes one matrix ``W [rows, cols]`` against the Hessian ``H [cols, cols]``
of its layer's inputs: columns are visited in act-order (descending ``diag H``), each is rounded to
the row scale, and its rounding error is pushed onto the not-yet-quantized columns through the
upper Cholesky factor of ``H^-1`` (Frantar et al. 2022), in blocks of 128 columns. The row scale is
SDClip (PR #1394): ``s_r = k * std(W_r) / R`` with ``R = 2^(bits-1) - 1``, stored as float16, so
values are clipped at +-k row standard deviations and no clip search is needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FP16_SMALLEST = 2.0**-24  # smallest positive float16 (subnormal): a scale must never be 0


def clip_range(bits: int) -> int:
    """Largest code of a symmetric signed ``bits``-bit grid: int6 -> 31, int7 -> 63, int8 -> 127."""
    return 2 ** (bits - 1) - 1


def fp16_positive(s: Tensor) -> Tensor:
    """Cast scales to float16, replacing zeros (constant rows) by the smallest positive float16."""
    s16 = s.to(torch.float16)
    return torch.where(s16 > 0, s16, torch.full_like(s16, FP16_SMALLEST))


def sdclip_scale(w: Tensor, clip_sigmas: float, bits: int) -> Tensor:
    """SDClip row scales ``k * std(W_r) / R`` as float16 (unbiased std, as the records compute it)."""
    return fp16_positive(clip_sigmas * w.float().std(dim=1) / clip_range(bits))


def round_to_nearest(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Plain per-row rounding to the grid ``scale * [-R, R]``; int8 codes."""
    r = clip_range(bits)
    s = scale.float().reshape(-1, 1)
    return torch.clamp(torch.round(w.float() / s), -r, r).to(torch.int8)


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float().reshape(-1, 1)


def _upper_cholesky_of_inverse(H: Tensor, damp: float) -> Tensor:
    """``chol(H^-1)`` (upper), damping ``H += damp * mean(diag H) * I``; more damping if H is not PD."""
    mean_diag = H.diagonal().mean()
    for attempt in range(6):
        Hd = H.clone()
        Hd.diagonal().add_(damp * (10.0**attempt) * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
    raise torch.linalg.LinAlgError("Hessian is not positive definite even with 1e5x damping")


@torch.no_grad()
def gptq_quantize_weight(
    w: Tensor,
    H: Tensor,
    *,
    clip_sigmas: float,
    bits: int,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
) -> tuple[Tensor, Tensor]:
    """Quantize ``w [rows, cols]`` with GPTQ against ``H [cols, cols]``; returns int8 codes and fp16 row scales.

    Runs on ``w``'s device in float32. Dead inputs (``H_jj == 0``) get ``H_jj = 1`` and their
    weight columns are zeroed (those inputs are always zero, so the columns never matter).
    """
    r = clip_range(bits)
    W = w.detach().float().clone()
    rows, cols = W.shape
    scale = sdclip_scale(W, clip_sigmas, bits)  # from the unpermuted, undamped weights
    s = scale.float()
    H = H.detach().to(device=W.device, dtype=torch.float32).clone()
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    if act_order:
        perm = torch.argsort(H.diagonal(), descending=True)
        W = W[:, perm].contiguous()
        H = H[perm][:, perm]
    Hinv = _upper_cholesky_of_inverse(H, damp)
    Q = torch.empty(rows, cols, dtype=torch.int8, device=W.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        Wb = W[:, i1:i2].clone()
        Hb = Hinv[i1:i2, i1:i2]
        Err = torch.empty(rows, i2 - i1, device=W.device)
        for j in range(i2 - i1):
            col = Wb[:, j]
            q = torch.clamp(torch.round(col / s), -r, r)
            Q[:, i1 + j] = q.to(torch.int8)
            err = (col - q * s) / Hb[j, j]
            Err[:, j] = err
            # Spread this column's error over the rest of the block (column j itself is done).
            Wb[:, j + 1 :] -= err[:, None] * Hb[j, j + 1 :][None, :]
        if i2 < cols:
            W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return Q.contiguous(), scale


def hessian_error(w: Tensor, w_hat: Tensor, H: Tensor) -> float:
    """``tr((W - W_hat) H (W - W_hat)^T)``: the layer-output error GPTQ minimizes (float64)."""
    d = (w.double() - w_hat.double())
    return float(torch.einsum("ri,ij,rj->", d, H.double(), d))


def gaussian_code_bits(bits: int, clip_sigmas: float) -> float:
    """Expected entropy per weight (bits) of SDClip codes for Gaussian rows.

    The codes of a Gaussian row have standard deviation ``R / k``; the entropy of a finely
    discretized Gaussian of std ``sigma`` is ``log2(sigma * sqrt(2 pi e))``. This is the 1394
    README's "size ~ b - log2 k + const" and predicts the top record's 15.87 MB within about 1%.
    """
    sigma_codes = clip_range(bits) / clip_sigmas
    return float(min(bits, max(0.0, math.log2(sigma_codes * math.sqrt(2 * math.pi * math.e)))))
