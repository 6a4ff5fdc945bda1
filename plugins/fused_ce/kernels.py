"""Triton kernels of the fused softcapped cross-entropy, written as plain functions.

They are turned into Triton kernels at first launch by :func:`golf_core.kernels.kernel`
(compiled on CUDA, interpreted under ``TRITON_INTERPRET=1``), so the choice between the two is
made when the kernel runs rather than when this module is imported. For that reason they call no
other ``@triton.jit`` helper: the element math is written out in each kernel.

Element math, in base 2 so each exponential is one ``ex2`` (L = log2 e):
    ``e = 2^(-2 L x / C)`` (= exp(-2x/C)), ``r = 1 / (1 + e)`` (= sigmoid(2x/C)),
    ``z = 2C r - C`` (= C tanh(x/C), the softcapped logit; no sign or abs needed),
    ``exp(z - s) = 2^(2CL r - (C + s) L)`` (one multiply-add and one ``ex2``),
    ``dz/dx = 1 - tanh(x/C)^2 = 4 r^2 e`` (no cancellation at large |x|; the exponent is
    clamped at 126 so ``e`` stays finite and ``r^2 e`` goes to 0, not NaN, for x << 0).
A forward step is a handful of instructions per logit, which keeps the kernels at the memory
rate rather than the instruction-issue rate.

``z`` lies in (-C, C), so when ``C + ln(V)`` is well below fp32's exp range (``FIXED_SHIFT``) the
log-sum-exp needs no running maximum: ``sum exp(z)`` cannot overflow or vanish. Otherwise the
kernels keep the usual online maximum. ``EVEN`` (the row is a whole number of blocks) drops the
column masks. The target's logit is read once per row (a scalar load), and the gradient's
``-1`` at the target is written after the row's vector store, behind a barrier.
Targets must lie in [0, V); an out-of-range target reads as logit 0 and gets no ``-1``.
"""

from __future__ import annotations

import triton.language as tl


def softcap_ce_fwd(
    logits_ptr, targets_ptr, losses_ptr, lse_ptr,
    n_cols, row_stride, softcap,
    BLOCK: tl.constexpr, FIXED_SHIFT: tl.constexpr, EVEN: tl.constexpr,
):
    """One row per program: stream the row once, write ``lse`` and ``loss = lse - z[target]``."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    log2e = 1.4426950408889634
    k = -2.0 * log2e / softcap
    offs = tl.arange(0, BLOCK)
    if FIXED_SHIFT:
        # Per-lane partial sums: one cross-lane reduction at the end instead of one per block.
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK):
            if EVEN:
                x = tl.load(row_ptr + start + offs).to(tl.float32)
            else:
                mask = start + offs < n_cols
                x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
            r = 1.0 / (1.0 + tl.exp2(tl.minimum(x * k, 126.0)))
            ez = tl.exp2(r * (2.0 * softcap * log2e) - softcap * log2e)
            if EVEN:
                acc += ez
            else:
                acc += tl.where(mask, ez, 0.0)
        lse = tl.log(tl.sum(acc, axis=0))
    else:
        run_max = -float("inf")
        run_sum = 0.0
        for start in range(0, n_cols, BLOCK):
            mask = start + offs < n_cols
            x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
            r = 1.0 / (1.0 + tl.exp2(tl.minimum(x * k, 126.0)))
            z = tl.where(mask, 2.0 * softcap * r - softcap, -float("inf"))
            new_max = tl.maximum(run_max, tl.max(z, axis=0))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
            run_max = new_max
        lse = run_max + tl.log(run_sum)
    target = tl.load(targets_ptr + row)
    valid = (target >= 0) & (target < n_cols)
    x_t = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32)
    z_t = 2.0 * softcap / (1.0 + tl.exp2(tl.minimum(x_t * k, 126.0))) - softcap
    tl.store(lse_ptr + row, lse)
    tl.store(losses_ptr + row, lse - z_t)


def softcap_ce_bwd(
    logits_ptr, targets_ptr, lse_ptr, grad_losses_ptr, grad_ptr,
    n_cols, row_stride, grad_row_stride, grad_losses_stride, softcap,
    BLOCK: tl.constexpr, EVEN: tl.constexpr,
):
    """One row per program: ``dx = g_row * (softmax(z) - onehot(target)) * dz/dx``, recomputing z."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    out_ptr = grad_ptr + row * grad_row_stride
    lse = tl.load(lse_ptr + row)
    g = tl.load(grad_losses_ptr + row * grad_losses_stride).to(tl.float32)
    log2e = 1.4426950408889634
    k = -2.0 * log2e / softcap
    a = 2.0 * softcap * log2e
    b = (softcap + lse) * log2e
    offs = tl.arange(0, BLOCK)
    for start in range(0, n_cols, BLOCK):
        if EVEN:
            x = tl.load(row_ptr + start + offs).to(tl.float32)
        else:
            mask = start + offs < n_cols
            x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
        e = tl.exp2(tl.minimum(x * k, 126.0))
        r = 1.0 / (1.0 + e)
        grad = (tl.exp2(r * a - b) * g) * (4.0 * r * r * e)
        if EVEN:
            tl.store(out_ptr + start + offs, grad.to(grad_ptr.dtype.element_ty))
        else:
            tl.store(out_ptr + start + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
    target = tl.load(targets_ptr + row)
    valid = (target >= 0) & (target < n_cols)
    x_t = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32)
    e_t = tl.exp2(tl.minimum(x_t * k, 126.0))
    r_t = 1.0 / (1.0 + e_t)
    grad_t = ((tl.exp2(r_t * a - b) - 1.0) * g) * (4.0 * r_t * r_t * e_t)
    tl.debug_barrier()  # the row's stores above land before the target's is overwritten
    tl.store(out_ptr + target, grad_t.to(grad_ptr.dtype.element_ty), mask=valid)


def softcap_ce_fused(
    logits_ptr, targets_ptr, losses_ptr, grad_ptr,
    n_cols, row_stride, grad_row_stride, softcap, grad_scale,
    BLOCK: tl.constexpr, FIXED_SHIFT: tl.constexpr, WHOLE_ROW: tl.constexpr, EVEN: tl.constexpr,
):
    """Loss and gradient in one launch: ``dx = grad_scale * (softmax(z) - onehot) * dz/dx``.

    ``WHOLE_ROW`` (the row fits one block): the row is read once and held in registers, so the
    logits are read once and the gradient written once. Otherwise the row is streamed twice
    (sum, then gradient), still without a stored log-sum-exp or a second launch.
    """
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    out_ptr = grad_ptr + row * grad_row_stride
    log2e = 1.4426950408889634
    k = -2.0 * log2e / softcap
    a = 2.0 * softcap * log2e
    offs = tl.arange(0, BLOCK)
    if WHOLE_ROW:
        if EVEN:
            x = tl.load(row_ptr + offs).to(tl.float32)
        else:
            mask = offs < n_cols
            x = tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        e = tl.exp2(tl.minimum(x * k, 126.0))
        r = 1.0 / (1.0 + e)
        if FIXED_SHIFT:
            shift = 0.0
        elif EVEN:
            shift = tl.max(2.0 * softcap * r - softcap, axis=0)
        else:
            shift = tl.max(tl.where(mask, 2.0 * softcap * r - softcap, -float("inf")), axis=0)
        b = (softcap + shift) * log2e
        ez = tl.exp2(r * a - b)
        if not EVEN:
            ez = tl.where(mask, ez, 0.0)
        total = tl.sum(ez, axis=0)
        grad = (ez * (grad_scale / total)) * (4.0 * r * r * e)
        if EVEN:
            tl.store(out_ptr + offs, grad.to(grad_ptr.dtype.element_ty))
        else:
            tl.store(out_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
        lse = shift + tl.log(total)
    else:
        if FIXED_SHIFT:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                mask = start + offs < n_cols
                x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
                r = 1.0 / (1.0 + tl.exp2(tl.minimum(x * k, 126.0)))
                acc += tl.where(mask, tl.exp2(r * a - softcap * log2e), 0.0)
            lse = tl.log(tl.sum(acc, axis=0))
        else:
            run_max = -float("inf")
            run_sum = 0.0
            for start in range(0, n_cols, BLOCK):
                mask = start + offs < n_cols
                x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
                r = 1.0 / (1.0 + tl.exp2(tl.minimum(x * k, 126.0)))
                z = tl.where(mask, 2.0 * softcap * r - softcap, -float("inf"))
                new_max = tl.maximum(run_max, tl.max(z, axis=0))
                run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
                run_max = new_max
            lse = run_max + tl.log(run_sum)
        b = (softcap + lse) * log2e
        for start in range(0, n_cols, BLOCK):
            mask = start + offs < n_cols
            x = tl.load(row_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
            e = tl.exp2(tl.minimum(x * k, 126.0))
            r = 1.0 / (1.0 + e)
            grad = (tl.exp2(r * a - b) * grad_scale) * (4.0 * r * r * e)
            tl.store(out_ptr + start + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
    target = tl.load(targets_ptr + row)
    valid = (target >= 0) & (target < n_cols)
    x_t = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32)
    e_t = tl.exp2(tl.minimum(x_t * k, 126.0))
    r_t = 1.0 / (1.0 + e_t)
    z_t = 2.0 * softcap * r_t - softcap
    grad_t = ((tl.exp(z_t - lse) - 1.0) * grad_scale) * (4.0 * r_t * r_t * e_t)
    tl.store(losses_ptr + row, lse - z_t)
    tl.debug_barrier()  # the row's stores above land before the target's is overwritten
    tl.store(out_ptr + target, grad_t.to(grad_ptr.dtype.element_ty), mask=valid)
