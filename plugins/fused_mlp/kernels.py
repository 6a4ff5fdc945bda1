"""Triton kernels of the fused LeakyReLU² MLP: one matmul with the activation in its epilogue.

``C = A @ B^T`` (or ``A @ B`` when B is stored ``[K, N]``), rounded to the storage dtype, then:

* forward (``FORWARD``): store ``pre = C`` and ``post = leaky_relu(pre, slope)^2``;
* backward: read ``pre`` and store ``dpre = C * d post/d pre`` with
  ``d post/d pre = 2 pre`` (pre > 0) or ``2 slope^2 pre`` (pre <= 0).

``C`` is rounded to the storage dtype before the activation, as the eager
``leaky_relu(F.linear(x, w)).square()`` does, so in bf16 both paths give the same bits for the
power-of-two slope 0.5.

Two variants, written as plain functions and turned into kernels at launch by
:func:`golf_core.kernels.kernel` (no nested ``@triton.jit`` helpers, so the epilogue is
written out where it is used):

* :func:`mlp_act_matmul`: one output tile per program, pointer loads with masks; any GPU, any
  float dtype (``ieee`` precision for float32), and the interpreter.
* :func:`mlp_act_matmul_tma`: persistent (one program per SM) with tensor-memory-accelerator
  descriptors, for Hopper in bf16/fp16; the epilogue may store the tile in two column halves to
  keep register pressure down (``SPLIT``).
"""

from __future__ import annotations

import triton.language as tl


def mlp_act_matmul(
    a_ptr, b_ptr, c_ptr, aux_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_auxm,
    slope,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
    FORWARD: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    # Grouped order: GROUP_M row-blocks share each column-block while it is in L2.
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_n[None, :].to(tl.int64) * stride_bn + offs_k[:, None] * stride_bk
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BK * stride_ak
        b_ptrs += BK * stride_bk

    out_dtype = c_ptr.dtype.element_ty
    c = acc.to(out_dtype)
    cf = c.to(tl.float32)
    mask = mask_m[:, None] & mask_n[None, :]
    rows = offs_m[:, None].to(tl.int64)
    c_ptrs = c_ptr + rows * stride_cm + offs_n[None, :]
    aux_ptrs = aux_ptr + rows * stride_auxm + offs_n[None, :]
    if FORWARD:
        tl.store(c_ptrs, c, mask=mask)
        act = tl.where(cf > 0, cf, cf * slope)
        tl.store(aux_ptrs, (act * act).to(out_dtype), mask=mask)
    else:
        pre = tl.load(aux_ptrs, mask=mask, other=0.0).to(tl.float32)
        dact = tl.where(pre > 0, 2.0 * pre, (2.0 * slope * slope) * pre)
        tl.store(c_ptrs, (cf * dact).to(out_dtype), mask=mask)


def mlp_act_matmul_tma(
    a_desc, b_desc, c_desc, aux_desc,
    M, N, K, slope,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr, FORWARD: tl.constexpr, B_KN: tl.constexpr, SPLIT: tl.constexpr,
    OUT_DTYPE: tl.constexpr,
):
    start = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    k_tiles = tl.cdiv(K, BK)
    per_group = GROUP_M * num_n
    for tile in tl.range(start, num_m * num_n, NUM_SMS, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        group_rows = tl.minimum(num_m - first_m, GROUP_M)
        off_m = (first_m + (tile % per_group) % group_rows) * BM
        off_n = ((tile % per_group) // group_rows) * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([off_m, ki * BK])
            if B_KN:
                acc = tl.dot(a, b_desc.load([ki * BK, off_n]), acc)
            else:
                acc = tl.dot(a, b_desc.load([off_n, ki * BK]).T, acc)
        if SPLIT:
            halves = tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1))
            acc_lo, acc_hi = tl.split(halves)
            c_lo = acc_lo.to(OUT_DTYPE)
            c_hi = acc_hi.to(OUT_DTYPE)
            f_lo = c_lo.to(tl.float32)
            f_hi = c_hi.to(tl.float32)
            if FORWARD:
                c_desc.store([off_m, off_n], c_lo)
                c_desc.store([off_m, off_n + BN // 2], c_hi)
                act_lo = tl.where(f_lo > 0, f_lo, f_lo * slope)
                act_hi = tl.where(f_hi > 0, f_hi, f_hi * slope)
                aux_desc.store([off_m, off_n], (act_lo * act_lo).to(OUT_DTYPE))
                aux_desc.store([off_m, off_n + BN // 2], (act_hi * act_hi).to(OUT_DTYPE))
            else:
                pre_lo = aux_desc.load([off_m, off_n]).to(tl.float32)
                pre_hi = aux_desc.load([off_m, off_n + BN // 2]).to(tl.float32)
                d_lo = f_lo * tl.where(pre_lo > 0, 2.0 * pre_lo, (2.0 * slope * slope) * pre_lo)
                d_hi = f_hi * tl.where(pre_hi > 0, 2.0 * pre_hi, (2.0 * slope * slope) * pre_hi)
                c_desc.store([off_m, off_n], d_lo.to(OUT_DTYPE))
                c_desc.store([off_m, off_n + BN // 2], d_hi.to(OUT_DTYPE))
        else:
            c = acc.to(OUT_DTYPE)
            cf = c.to(tl.float32)
            if FORWARD:
                c_desc.store([off_m, off_n], c)
                act = tl.where(cf > 0, cf, cf * slope)
                aux_desc.store([off_m, off_n], (act * act).to(OUT_DTYPE))
            else:
                pre = aux_desc.load([off_m, off_n]).to(tl.float32)
                d = cf * tl.where(pre > 0, 2.0 * pre, (2.0 * slope * slope) * pre)
                c_desc.store([off_m, off_n], d.to(OUT_DTYPE))
