"""golf-zloss: the z-loss auxiliary term as a golf technique shipped in its own distribution.

Installed with ``pip install golf-zloss`` (or ``pip install -e .`` from this folder), it registers
the ``golf.plugins`` entry point ``zloss = "golf_zloss:ZLoss"``; golf's catalog then lists
``zloss`` (source: entry point) and any stack can enable it with ``[techniques.zloss]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from golf_core import Technique, hookimpl, param


def z_term(logits: Tensor, softcap: float) -> Tensor:
    """``mean_i (log Z_i)^2`` with ``Z_i = sum_v exp(c tanh(z_iv / c))``: the softcapped logits the loss sees."""
    capped = softcap * torch.tanh(logits.float() / softcap)
    return torch.logsumexp(capped, dim=-1).square().mean()


class ZLoss(Technique):
    """Z-loss: add weight * mean((log Z)^2) to the training loss, Z the softmax normalizer of each position.

    The cross-entropy is unchanged by a constant added to a position's logits; the z-loss removes
    that freedom by pulling ``log Z`` towards 0, which keeps the logits from drifting and the
    softmax well conditioned in low precision. Computed on the softcapped logits
    ``c * tanh(z / c)`` that the loss sees. A ``@hookimpl(wrapper=True)`` around the firstresult
    ``golf_loss_fn``: it adds its term to whichever loss the stack uses (the eager default or a
    fused kernel), inside the compiled training step; evaluation scores plain cross-entropy.
    Paper: PaLM (Chowdhery et al., 2022, section 5: z_loss = 1e-4 * log^2 Z), after Mesh
    TensorFlow's softmax z-loss. Not from a parameter-golf PR.
    """

    name = "zloss"
    stage = "loss"
    origin_pr = None
    credits = "Chowdhery et al. (PaLM, 2022); Shazeer et al. (Mesh TensorFlow)"
    version = "0.1.0"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        weight: float = param(1e-4, "multiplier of mean((log Z)^2) in the training loss (PaLM: 1e-4)")

        def validate(self) -> None:
            if not self.weight >= 0:
                raise ValueError(f"weight = {self.weight} must not be negative")

    @hookimpl(wrapper=True)
    def golf_loss_fn(self, ctx):
        loss_fn = yield  # the loss the firstresult chain chose
        weight = self.params.weight

        def with_z_loss(logits: Tensor, targets: Tensor, softcap: float) -> Tensor:
            return loss_fn(logits, targets, softcap) + weight * z_term(logits, softcap)

        return with_z_loss


__all__ = ["ZLoss", "z_term"]
