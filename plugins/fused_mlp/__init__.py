"""Fused LeakyReLU² MLP: Triton matmuls with the activation in their epilogue, forward and backward.

In training, each block's MLP ``W_down · leaky_relu(W_up x, slope)²`` runs as the custom op
``golf_fused_mlp::mlp``: one Triton matmul computes ``pre = x W_upᵀ`` and writes ``pre`` and
``post = leaky(pre)²`` from its epilogue (``post W_downᵀ`` is cuBLAS); in the backward one Triton
matmul computes ``(g W_down) ⊙ d post/d pre`` with ``pre`` read in its epilogue. The math is the
``leaky_relu_sq`` technique's (required; its ``negative_slope`` is used); evaluation, calibration
and TTT (adapters) take the eager path through the same ``fc``/``proj`` modules, so parameter
names (``blocks.i.mlp.fc.weight``, ``blocks.i.mlp.proj.weight``) and routing are unchanged.

Origin PR #1530 (samacqua, based on modded-nanogpt's fused ReLU² kernel), kept in PR #1787
(nprime06) and PR #1855 (codemath3000). Written anew for golf.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from golf_core import GolfError, Technique, hookimpl, param
from golf_core.kernels import interpret_mode
from golf_core.model.gpt import MLP
from plugins.fused_mlp import ops
from plugins.fused_mlp.ops import IMPLS, fused_leaky_relu_sq_mlp, leaky_relu_sq

# The core MLP's own adapter sites (of golf_core.model.gpt.ADAPTER_SITES): a delta at either
# needs the unfused forward, which applies it between the two matmuls.
MLP_ADAPTER_SITES = ("mlp_fc", "mlp_proj")


class FusedLeakyReLUSqMLP(MLP):
    """The core MLP (same ``fc``, ``proj``, ``activation``) whose training forward is the fused op.

    Built from an existing MLP by :meth:`adopt`, so its parameters, their names and their values
    are the original's. Anything but a training call without MLP adapters (eval, calibration,
    TTT adapters at ``mlp_fc``/``mlp_proj``) runs the core forward.
    """

    negative_slope: float = 0.5
    kernel: str = "auto"

    @classmethod
    def adopt(cls, mlp: MLP, negative_slope: float, kernel: str) -> FusedLeakyReLUSqMLP:
        fused = cls.__new__(cls)
        fused.__dict__.update(mlp.__dict__)
        fused.negative_slope = float(negative_slope)
        fused.kernel = kernel
        return fused

    def forward(self, x: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        # Adapter sites are tested by Python membership: fixed when the graph is traced.
        if self.training and (adapters is None or not any(site in adapters for site in MLP_ADAPTER_SITES)):
            w1 = self.fc.weight.to(x.dtype)
            w2 = self.proj.weight.to(x.dtype)
            return fused_leaky_relu_sq_mlp(x, w1, w2, self.negative_slope, self.kernel)
        return super().forward(x, adapters)


def computes_leaky_relu_sq(activation, slope: float) -> bool:
    """``activation`` is ``leaky_relu(., slope)^2`` on a probe spanning both signs and zero."""
    probe = torch.linspace(-4.0, 4.0, 33, dtype=torch.float64)
    try:
        out = activation(probe)
    except Exception:  # an activation that cannot take the probe is not this function
        return False
    return isinstance(out, Tensor) and out.shape == probe.shape and torch.allclose(out, leaky_relu_sq(probe, slope))


class FusedMLP(Technique):
    """Fused LeakyReLU² MLP: Triton matmul+activation kernels for the training forward and backward.

    ``pre = x W_upᵀ`` and ``post = leaky_relu(pre)²`` from one kernel; ``(g W_down) ⊙ post'(pre)``
    from another in the backward. Origin PR #1530 (samacqua, after modded-nanogpt's fused ReLU²
    kernel); kept in PR #1787 (nprime06) and PR #1855 (codemath3000).
    """

    name = "fused_mlp"
    stage = "model"
    origin_pr = 1530
    credits = "samacqua (PR #1530, after modded-nanogpt's fused kernel); PR #1787 (nprime06); PR #1855 (codemath3000)"
    requires = ("leaky_relu_sq",)

    @dataclass(frozen=True, kw_only=True)
    class Params:
        kernel: str = param(
            "auto",
            "Triton matmul: auto (persistent TMA kernel on Hopper in bf16/fp16, else the pointer kernel) | tma | portable",
            choices=IMPLS,
        )

    @hookimpl
    def golf_patch_model(self, model, ctx):
        slope = ctx.stack.techniques["leaky_relu_sq"].negative_slope
        swapped = 0
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent.named_children()):
                if not isinstance(child, MLP) or isinstance(child, FusedLeakyReLUSqMLP):
                    continue
                where = f"{parent_name}.{child_name}" if parent_name else child_name
                if not computes_leaky_relu_sq(child.activation, slope):
                    raise GolfError(
                        f"techniques.fused_mlp: {where} does not compute leaky_relu(x, {slope})^2 "
                        "(another technique changed the MLP activation); disable fused_mlp or that technique"
                    )
                setattr(parent, child_name, FusedLeakyReLUSqMLP.adopt(child, slope, self.params.kernel))
                swapped += 1
        if swapped == 0:
            raise GolfError("techniques.fused_mlp: the model has no core MLP (fc, proj) to fuse; disable fused_mlp")

    @hookimpl
    def golf_report_header(self, ctx):
        if ops.triton is None:
            where = "torch fallback (Triton is not installed)"
        elif ctx.device.type == "cuda":
            where = f"Triton kernels on CUDA (kernel={self.params.kernel})"
        elif interpret_mode():
            where = "Triton kernels in the interpreter (TRITON_INTERPRET)"
        else:
            where = "torch fallback (no CUDA, TRITON_INTERPRET unset)"
        return [f"fused_mlp: {where}"]


__all__ = ["FusedLeakyReLUSqMLP", "FusedMLP", "computes_leaky_relu_sq", "fused_leaky_relu_sq_mlp"]
