"""Custom ops of the fused softcapped cross-entropy, their autograd, fakes and eager fallback.

Two training losses, both ``mean_i CE(C * tanh(logits_i / C), targets_i)`` in float32:

* :func:`fused_softcapped_cross_entropy` (two passes): ``golf_fused_ce::softcap_ce`` streams the
  logits once for the per-row loss and log-sum-exp; its backward, ``softcap_ce_backward``,
  streams them again and writes the gradient. Exact for any upstream gradient.
* :func:`single_pass_softcapped_cross_entropy`: ``golf_fused_ce::softcap_ce_grad`` writes the
  gradient during the forward (the gradient of a mean loss is known up to the upstream scalar),
  so the logits are read once. The gradient is stored for an upstream gradient of ``grad_scale``
  (the trainer's ``1 / grad_accum``); the backward returns it untouched after a device-side
  check that the upstream gradient is that value, since multiplying by any other would cost the
  very pass this op saves.

Where the kernels run: CUDA tensors use the compiled Triton kernels; CPU tensors use them under
``TRITON_INTERPRET=1`` (tests); otherwise the ops compute the same math with torch (so a CPU run
works without Triton). The choice is made per call, inside the op, so ``torch.compile`` sees one
opaque op either way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from golf_core.kernels import kernel, uses_triton

try:  # Triton is optional: without it every call takes the torch path.
    import triton

    from plugins.fused_ce import kernels as _kernels
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    _kernels = None

LIBRARY = "golf_fused_ce"

# Launch shapes, one row per program: BLOCK columns per step (capped at the row's width) and
# warps. Measured on an H100 at the record's [98304, 8192] bf16 (bench/bench_fused_ce.py
# --sweep): forward 0.63 ms at 1024 x 4 warps (0.77 at 8192 x 16; PR #1787's 0.86), backward
# 1.08-1.12 ms from 512 to 4096 columns (memory floor 1.07). The single-pass kernel ("fused")
# holds a whole row in registers up to its block (the record's 8192 columns fit; longer rows
# are streamed twice), with warps growing with the row: 1.32 ms at 16 warps (1.35 at 8, 2.07
# at 32).
CONFIG = {
    "fwd": {"block": 1024, "warps": 4},
    "bwd": {"block": 1024, "warps": 4},
    "fused": {"block": 16384, "warps_per_512": 1, "max_warps": 16},
}


def fixed_shift(softcap: float, n_cols: int) -> bool:
    """``sum exp(z)`` over ``|z| < C`` stays inside fp32 (no running max needed)."""
    return softcap + math.log(max(n_cols, 1)) < 80.0


def launch_config(kind: str, n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) of kernel ``kind`` ("fwd", "bwd", "fused") for rows of ``n_cols``."""
    cfg = CONFIG[kind]
    block = min(triton.next_power_of_2(max(n_cols, 16)), cfg["block"])
    if kind == "fused":
        return block, max(4, min(cfg["max_warps"], cfg["warps_per_512"] * block // 512))
    return block, cfg["warps"]


def _check(logits: Tensor, targets: Tensor, softcap: float) -> None:
    if logits.ndim != 2 or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"fused_ce: expected logits [N, V] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if softcap <= 0:
        raise ValueError(f"fused_ce: softcap must be positive, got {softcap}")


def _rows(t: Tensor) -> Tensor:
    # The kernels index columns with unit stride; rows may have any stride.
    return t if t.stride(-1) == 1 else t.contiguous()


# ---------------------------------------------------------------------------------------------
# torch fallback math (no Triton, or CPU without TRITON_INTERPRET)
# ---------------------------------------------------------------------------------------------


def _torch_forward(logits: Tensor, targets: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    z = softcap * torch.tanh(logits.float() / softcap)
    lse = torch.logsumexp(z, dim=-1)
    losses = lse - z.gather(1, targets[:, None]).squeeze(1)
    return losses, lse


def _grad_reference(logits: Tensor, targets: Tensor, lse: Tensor, row_scale: Tensor, softcap: float) -> Tensor:
    u = logits.float() * (2.0 / softcap)
    probs = torch.exp(softcap * torch.tanh(logits.float() / softcap) - lse[:, None])
    probs.scatter_add_(1, targets[:, None], torch.full_like(lse[:, None], -1.0))
    # 1 - tanh^2 as 4 sigmoid(2x/C) sigmoid(-2x/C): no cancellation where |x| >> C.
    dz_dx = 4.0 * torch.sigmoid(u) * torch.sigmoid(-u)
    return (probs * dz_dx * row_scale[:, None]).to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# Two-pass op: forward (loss, lse), backward (gradient)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{LIBRARY}::softcap_ce", mutates_args=())
def softcap_ce(logits: Tensor, targets: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    """Per-row ``(loss, lse)`` of the softcapped logits, float32, without materialising them."""
    _check(logits, targets, softcap)
    if not uses_triton(logits):
        return _torch_forward(logits, targets, softcap)
    logits = _rows(logits)
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    lse = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    if n_rows:
        block, warps = launch_config("fwd", n_cols)
        kernel(_kernels.softcap_ce_fwd)[(n_rows,)](
            logits, targets, losses, lse, n_cols, logits.stride(0), float(softcap),
            BLOCK=block, FIXED_SHIFT=fixed_shift(softcap, n_cols), EVEN=n_cols % block == 0, num_warps=warps,
        )
    return losses, lse


@softcap_ce.register_fake
def _(logits: Tensor, targets: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    _check(logits, targets, softcap)
    n_rows = logits.shape[0]
    return logits.new_empty(n_rows, dtype=torch.float32), logits.new_empty(n_rows, dtype=torch.float32)


@torch.library.custom_op(f"{LIBRARY}::softcap_ce_backward", mutates_args=())
def softcap_ce_backward(logits: Tensor, targets: Tensor, lse: Tensor, grad_losses: Tensor, softcap: float) -> Tensor:
    """Gradient of ``sum_i grad_losses[i] * loss_i`` with respect to the raw logits, in their dtype."""
    _check(logits, targets, softcap)
    if not uses_triton(logits):
        return _grad_reference(logits, targets, lse, grad_losses.float(), softcap)
    logits = _rows(logits)
    n_rows, n_cols = logits.shape
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    if n_rows:
        block, warps = launch_config("bwd", n_cols)
        kernel(_kernels.softcap_ce_bwd)[(n_rows,)](
            logits, targets, lse, grad_losses, grad,
            n_cols, logits.stride(0), grad.stride(0), grad_losses.stride(0), float(softcap),
            BLOCK=block, EVEN=n_cols % block == 0, num_warps=warps,
        )
    return grad


@softcap_ce_backward.register_fake
def _(logits: Tensor, targets: Tensor, lse: Tensor, grad_losses: Tensor, softcap: float) -> Tensor:
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_two_pass(ctx, inputs, output) -> None:
    logits, targets, softcap = inputs
    _losses, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the unused lse output
    ctx.save_for_backward(logits, targets, lse)
    ctx.softcap = softcap


def _backward_two_pass(ctx, grad_losses: Tensor, _grad_lse):
    logits, targets, lse = ctx.saved_tensors
    grad = torch.ops.golf_fused_ce.softcap_ce_backward(logits, targets, lse, grad_losses, ctx.softcap)
    return grad, None, None


softcap_ce.register_autograd(_backward_two_pass, setup_context=_setup_two_pass)


# ---------------------------------------------------------------------------------------------
# Single-pass op: (mean loss, gradient for an upstream gradient of grad_scale)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{LIBRARY}::softcap_ce_grad", mutates_args=())
def softcap_ce_grad(logits: Tensor, targets: Tensor, softcap: float, grad_scale: float) -> tuple[Tensor, Tensor]:
    """``(mean loss, d(grad_scale * mean loss)/d logits)``: the loss and its gradient in one pass."""
    _check(logits, targets, softcap)
    n_rows, n_cols = logits.shape
    row_scale = grad_scale / max(n_rows, 1)
    if not uses_triton(logits):
        losses, lse = _torch_forward(logits, targets, softcap)
        scale = torch.full_like(lse, row_scale)
        return losses.mean(), _grad_reference(logits, targets, lse, scale, softcap)
    logits = _rows(logits)
    losses = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    if n_rows:
        block, warps = launch_config("fused", n_cols)
        kernel(_kernels.softcap_ce_fused)[(n_rows,)](
            logits, targets, losses, grad,
            n_cols, logits.stride(0), grad.stride(0), float(softcap), float(row_scale),
            BLOCK=block, FIXED_SHIFT=fixed_shift(softcap, n_cols), WHOLE_ROW=n_cols <= block,
            EVEN=n_cols == block, num_warps=warps,
        )
    return losses.mean(), grad


@softcap_ce_grad.register_fake
def _(logits: Tensor, targets: Tensor, softcap: float, grad_scale: float) -> tuple[Tensor, Tensor]:
    _check(logits, targets, softcap)
    return logits.new_empty((), dtype=torch.float32), torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_single_pass(ctx, inputs, output) -> None:
    _logits, _targets, _softcap, grad_scale = inputs
    _loss, grad = output
    ctx.mark_non_differentiable(grad)
    # Without this, autograd fills an [N, V] zero "gradient" of the stored gradient output:
    # a full extra write and as much memory as the logits.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(grad)
    ctx.grad_scale = grad_scale


def _backward_single_pass(ctx, grad_loss: Tensor, _grad_grad):
    (grad,) = ctx.saved_tensors
    # The stored gradient is only right for this upstream value; refuse anything else loudly
    # (a device-side assert: no host sync inside the compiled backward).
    expected = ctx.grad_scale
    ok = (grad_loss.float() - expected).abs() <= 1e-6 * abs(expected)
    torch._assert_async(ok, "fused_ce single_pass: the loss was backpropagated with an upstream gradient other than the grad_scale it was built for; set techniques.fused_ce.single_pass=false")
    return grad, None, None, None


softcap_ce_grad.register_autograd(_backward_single_pass, setup_context=_setup_single_pass)


# ---------------------------------------------------------------------------------------------
# The loss functions handed to the model (contract of golf_loss_fn)
# ---------------------------------------------------------------------------------------------


def fused_softcapped_cross_entropy(logits: Tensor, targets: Tensor, softcap: float) -> Tensor:
    """Mean CE of ``softcap * tanh(logits / softcap)``: two streaming kernels, exact for any upstream gradient."""
    losses, _lse = torch.ops.golf_fused_ce.softcap_ce(logits, targets.to(torch.int64), float(softcap))
    return losses.mean()


def single_pass_softcapped_cross_entropy(logits: Tensor, targets: Tensor, softcap: float, grad_scale: float = 1.0) -> Tensor:
    """Mean CE whose gradient is written during the forward, for backpropagation with ``grad_scale``.

    Without autograd (``no_grad``, or logits that need no gradient) it falls back to the
    two-pass forward, which writes no gradient.
    """
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return fused_softcapped_cross_entropy(logits, targets, softcap)
    loss, _grad = torch.ops.golf_fused_ce.softcap_ce_grad(logits, targets.to(torch.int64), float(softcap), float(grad_scale))
    return loss
