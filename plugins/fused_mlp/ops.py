"""Custom ops of the fused LeakyReLU² MLP, their autograd, fakes and eager fallback.

``out = leaky_relu(x @ w1^T, slope)^2 @ w2^T`` for ``x [M, D]``, ``w1 [H, D]``, ``w2 [D, H]``:

* forward, ``golf_fused_mlp::mlp``: one Triton matmul computes ``pre = x w1^T`` and writes
  ``pre`` and ``post = leaky(pre)^2`` from its epilogue; ``out = post w2^T`` is a cuBLAS matmul.
* backward: ``golf_fused_mlp::mlp_dpre`` computes ``dpre = (g w2) * d post/d pre`` in one Triton
  matmul whose epilogue reads ``pre``, so ``d post`` is never stored; the three weight/input
  gradients (``g^T post``, ``dpre^T x``, ``dpre w1``) are plain matmuls the compiler sees.

Only the matmul+activation pairs are fused (wrapping more would hide cross-op fusion from
Inductor, PR #1420). Where the kernels run: CUDA tensors use the compiled kernels (the persistent
TMA kernel on Hopper in bf16/fp16, the pointer kernel elsewhere); CPU tensors use them under
``TRITON_INTERPRET=1``; otherwise the ops compute the same math with torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from golf_core.kernels import interpret_mode, kernel, uses_triton

try:  # Triton is optional: without it every call takes the torch path.
    import triton
    import triton.language as tl

    from plugins.fused_mlp import kernels as _kernels
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None
    _kernels = None

LIBRARY = "golf_fused_mlp"
IMPLS = ("auto", "tma", "portable")


def leaky_relu_sq(x: Tensor, slope: float) -> Tensor:
    """The eager activation: ``leaky_relu(x, slope)^2``."""
    return F.leaky_relu(x, negative_slope=slope).square()


def leaky_relu_sq_grad(pre: Tensor, slope: float) -> Tensor:
    """``d leaky_relu(p, slope)^2 / dp``: ``2p`` for ``p > 0``, ``2 slope^2 p`` otherwise."""
    return torch.where(pre > 0, 2.0 * pre, (2.0 * slope * slope) * pre)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

_TL_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}

# Tile shapes at the record's MLP (M = 98,304 tokens, D = 512, H = 2,048), measured on an H100
# (bench/bench_fused_mlp.py --sweep): forward kernel 0.48 ms (PR #1787's 0.53), backward 0.51
# (0.51). 256x128 tiles, 3 stages and GROUP_M 16 were within noise; 128x128 tiles were slower;
# a fourth backward stage does not fit in shared memory.
TMA_CONFIG = {"BM": 128, "BN": 256, "BK": 64, "GROUP_M": 8, "SPLIT": True, "num_warps": 8, "stages_fwd": 4, "stages_bwd": 3}
PORTABLE_CONFIG = {"BM": 128, "BN": 128, "BK": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
# Small tiles for the interpreter (it runs each program in numpy) and for float32 on a GPU.
SMALL_CONFIG = {"BM": 32, "BN": 32, "BK": 32, "GROUP_M": 4, "num_warps": 4, "num_stages": 2}


def tma_ok(a: Tensor, b: Tensor, n: int) -> bool:
    """The tensors meet the TMA rules: 16-byte aligned rows and base pointers, unit inner stride."""
    if interpret_mode() and a.device.type == "cpu":
        capable = True
    else:
        capable = a.is_cuda and torch.cuda.get_device_capability(a.device)[0] >= 9 and a.dtype in (torch.bfloat16, torch.float16)
    size = a.element_size()
    return (
        capable
        and a.dtype in _TL_DTYPES
        and a.stride(-1) == 1 and b.stride(-1) == 1
        and (a.stride(0) * size) % 16 == 0 and (b.stride(0) * size) % 16 == 0 and (n * size) % 16 == 0
        and a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0
    )


def choose_impl(impl: str, a: Tensor, b: Tensor, n: int) -> str:
    if impl not in IMPLS:
        raise ValueError(f"fused_mlp: kernel must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "tma" if tma_ok(a, b, n) else "portable"
    if impl == "tma" and not tma_ok(a, b, n):
        raise ValueError("fused_mlp: kernel='tma' needs Hopper (or the interpreter), bf16/fp16 and 16-byte aligned rows")
    return impl


def act_matmul(a: Tensor, b: Tensor, *, b_kn: bool, aux: Tensor | None, slope: float, impl: str = "auto", config: dict | None = None):
    """``C = a @ (b if b_kn else b^T)`` with the activation epilogue.

    ``aux is None``: forward, returns ``(pre, post)``. Otherwise ``aux`` is ``pre`` and the call
    returns ``dpre = C * d post/d pre``. ``a`` is ``[M, K]``; ``b`` is ``[K, N]`` or ``[N, K]``.
    """
    a = a if a.stride(-1) == 1 else a.contiguous()
    b = b if b.stride(-1) == 1 else b.contiguous()
    m, k = a.shape
    n = b.shape[1] if b_kn else b.shape[0]
    forward = aux is None
    c = torch.empty((m, n), device=a.device, dtype=a.dtype)
    if forward:
        aux = torch.empty((m, n), device=a.device, dtype=a.dtype)
    elif aux.stride(-1) != 1 or aux.stride(0) != n:
        aux = aux.contiguous()
    if m == 0:
        return (c, aux) if forward else c
    small = interpret_mode() or a.dtype == torch.float32
    if choose_impl(impl, a, b, n) == "tma":
        _launch_tma(a, b, c, aux, m, n, k, b_kn, forward, slope, config)
    else:
        cfg = dict(config or (SMALL_CONFIG if small else PORTABLE_CONFIG))
        grid = (triton.cdiv(m, cfg["BM"]) * triton.cdiv(n, cfg["BN"]),)
        stride_bn, stride_bk = (b.stride(1), b.stride(0)) if b_kn else (b.stride(0), b.stride(1))
        kernel(_kernels.mlp_act_matmul)[grid](
            a, b, c, aux, m, n, k,
            a.stride(0), a.stride(1), stride_bn, stride_bk, c.stride(0), aux.stride(0),
            float(slope),
            BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], GROUP_M=cfg["GROUP_M"], FORWARD=forward,
            PRECISION="ieee" if a.dtype == torch.float32 else "tf32",
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    return (c, aux) if forward else c


def _launch_tma(a, b, c, aux, m, n, k, b_kn, forward, slope, config) -> None:
    from triton.tools.tensor_descriptor import TensorDescriptor

    if interpret_mode() and a.device.type == "cpu":
        cfg = {**SMALL_CONFIG, "SPLIT": True, "stages_fwd": 1, "stages_bwd": 1}
        num_sms = 4
    else:
        cfg = TMA_CONFIG
        num_sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    cfg = {**cfg, **(config or {})}
    bm, bn, bk = cfg["BM"], cfg["BN"], cfg["BK"]
    out_bn = bn // 2 if cfg["SPLIT"] else bn
    a_desc = TensorDescriptor.from_tensor(a, [bm, bk])
    b_desc = TensorDescriptor.from_tensor(b, [bk, bn] if b_kn else [bn, bk])
    c_desc = TensorDescriptor.from_tensor(c, [bm, out_bn])
    aux_desc = TensorDescriptor.from_tensor(aux, [bm, out_bn])
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    kernel(_kernels.mlp_act_matmul_tma)[(min(num_sms, tiles),)](
        a_desc, b_desc, c_desc, aux_desc, m, n, k, float(slope),
        BM=bm, BN=bn, BK=bk, GROUP_M=cfg["GROUP_M"], NUM_SMS=num_sms, FORWARD=forward, B_KN=b_kn,
        SPLIT=cfg["SPLIT"], OUT_DTYPE=getattr(tl, _TL_DTYPES[a.dtype]),
        num_warps=cfg["num_warps"], num_stages=cfg["stages_fwd" if forward else "stages_bwd"],
    )


# ---------------------------------------------------------------------------------------------
# Custom ops
# ---------------------------------------------------------------------------------------------


def _check(x: Tensor, w1: Tensor, w2: Tensor) -> None:
    if x.ndim != 2 or w1.ndim != 2 or w2.ndim != 2 or w1.shape[1] != x.shape[1] or w2.shape != (w1.shape[1], w1.shape[0]):
        raise ValueError(
            f"fused_mlp: expected x [M, D], w1 [H, D], w2 [D, H]; got {tuple(x.shape)}, {tuple(w1.shape)}, {tuple(w2.shape)}"
        )
    if not (x.dtype == w1.dtype == w2.dtype):
        raise ValueError(f"fused_mlp: x, w1, w2 must share a dtype, got {x.dtype}, {w1.dtype}, {w2.dtype}")


@torch.library.custom_op(f"{LIBRARY}::mlp", mutates_args=())
def mlp(x: Tensor, w1: Tensor, w2: Tensor, slope: float, impl: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, pre, post)`` of the LeakyReLU² MLP; ``pre`` and ``post`` are kept for the backward."""
    _check(x, w1, w2)
    # Autocast must not re-type the inner matmul: the fake promises the input dtype.
    with torch.autocast(x.device.type, enabled=False):
        if uses_triton(x):
            pre, post = act_matmul(x, w1, b_kn=False, aux=None, slope=slope, impl=impl)
        else:
            pre = x @ w1.t()
            post = leaky_relu_sq(pre, slope)
        return post @ w2.t(), pre, post


@mlp.register_fake
def _(x: Tensor, w1: Tensor, w2: Tensor, slope: float, impl: str) -> tuple[Tensor, Tensor, Tensor]:
    _check(x, w1, w2)
    m, h = x.shape[0], w1.shape[0]
    return x.new_empty((m, w2.shape[0])), x.new_empty((m, h)), x.new_empty((m, h))


@torch.library.custom_op(f"{LIBRARY}::mlp_dpre", mutates_args=())
def mlp_dpre(grad_out: Tensor, w2: Tensor, pre: Tensor, slope: float, impl: str) -> Tensor:
    """``(grad_out @ w2) * d post/d pre``: the gradient at the pre-activation, ``d post`` never stored."""
    with torch.autocast(grad_out.device.type, enabled=False):
        if uses_triton(grad_out):
            return act_matmul(grad_out, w2, b_kn=True, aux=pre, slope=slope, impl=impl)
        return (grad_out @ w2) * leaky_relu_sq_grad(pre, slope)


@mlp_dpre.register_fake
def _(grad_out: Tensor, w2: Tensor, pre: Tensor, slope: float, impl: str) -> Tensor:
    return pre.new_empty((grad_out.shape[0], w2.shape[1]))


def _setup(ctx, inputs, output) -> None:
    x, w1, w2, slope, impl = inputs
    _out, pre, post = output
    ctx.mark_non_differentiable(pre, post)
    # Without this, autograd fills zero "gradients" for pre and post: two [M, H] writes per step.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w1, w2, pre, post)
    ctx.slope = slope
    ctx.impl = impl


def _backward(ctx, grad_out: Tensor, _grad_pre, _grad_post):
    x, w1, w2, pre, post = ctx.saved_tensors
    grad_out = grad_out.to(x.dtype)
    dpre = torch.ops.golf_fused_mlp.mlp_dpre(grad_out, w2, pre, ctx.slope, ctx.impl)
    dx = dpre @ w1 if ctx.needs_input_grad[0] else None
    dw1 = dpre.t() @ x if ctx.needs_input_grad[1] else None
    dw2 = grad_out.t() @ post if ctx.needs_input_grad[2] else None
    return dx, dw1, dw2, None, None


mlp.register_autograd(_backward, setup_context=_setup)


def fused_leaky_relu_sq_mlp(x: Tensor, w1: Tensor, w2: Tensor, slope: float = 0.5, impl: str = "auto") -> Tensor:
    """``leaky_relu(x w1^T, slope)^2 w2^T`` over the last dim of ``x`` (any leading shape)."""
    flat = x.reshape(-1, x.shape[-1])
    out, _pre, _post = torch.ops.golf_fused_mlp.mlp(flat, w1, w2, float(slope), impl)
    return out.reshape(*x.shape[:-1], w2.shape[0])
