"""Fused softcapped cross-entropy: Triton kernels for the training loss, no softcapped logits stored.

Computes ``mean_i CE(C * tanh(x_i / C), y_i)`` from the raw head outputs ``x [N, V]`` in one
streaming pass per row (softcap, log-sum-exp and the row's loss in registers), and its gradient
in a second pass that recomputes the softcap, so the float32 ``[N, V]`` softcapped copy the eager
path allocates never exists. Optionally (``single_pass``) the gradient is written during the
forward, reading the logits once. Evaluation keeps scoring with the eager reference
(``golf_core.model.gpt.softcapped_cross_entropy``), which stays the core default.

Origin PR #1787 (nprime06, "FusedCE"), kept in PR #1855 (codemath3000). Written anew for golf:
custom ops ``golf_fused_ce::softcap_ce`` / ``softcap_ce_backward`` / ``softcap_ce_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import Technique, hookimpl, param
from golf_core.kernels import interpret_mode
from plugins.fused_ce import ops
from plugins.fused_ce.ops import fused_softcapped_cross_entropy, single_pass_softcapped_cross_entropy


def trainer_grad_scale(ctx) -> float:
    """The upstream gradient the trainer gives the loss: ``1 / grad_accum`` (``(loss / grad_accum).backward()``)."""
    steps = ctx.cfg.train.grad_accum_steps
    if steps <= 0:
        steps = max(1, 8 // max(ctx.world_size, 1))
    return 1.0 / steps


class FusedCE(Technique):
    """Fused softcapped cross-entropy: Triton forward/backward kernels for the training loss.

    ``mean CE(C tanh(x / C), y)`` with the softcap, log-sum-exp and row loss computed in one
    streaming pass over each row, the gradient in a second (or, with ``single_pass``, during the
    forward). Origin PR #1787 (nprime06); kept in PR #1855 (codemath3000).
    """

    name = "fused_ce"
    stage = "loss"
    origin_pr = 1787
    credits = "nprime06 (PR #1787); kept in PR #1855 (codemath3000)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        single_pass: bool = param(
            False,
            "write the gradient during the forward (logits read once); valid only when the loss is "
            "backpropagated with the trainer's 1/grad_accum, checked on the device",
        )

    @hookimpl
    def golf_loss_fn(self, ctx):
        if self.params.single_pass:
            return partial(single_pass_softcapped_cross_entropy, grad_scale=trainer_grad_scale(ctx))
        return fused_softcapped_cross_entropy

    @hookimpl
    def golf_report_header(self, ctx):
        if ops.triton is None:
            where = "torch fallback (Triton is not installed)"
        elif ctx.device.type == "cuda":
            where = "Triton kernels on CUDA"
        elif interpret_mode():
            where = "Triton kernels in the interpreter (TRITON_INTERPRET)"
        else:
            where = "torch fallback (no CUDA, TRITON_INTERPRET unset)"
        mode = "single pass" if self.params.single_pass else "two passes"
        return [f"fused_ce: {where}, {mode}"]


__all__ = ["FusedCE", "fused_softcapped_cross_entropy", "single_pass_softcapped_cross_entropy"]
