"""Core default loss: eager softcapped cross-entropy (the reference every loss kernel is tested against)."""

from __future__ import annotations

from golf_core.hookspecs import hookimpl
from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.technique import Technique


class SoftcapCrossEntropy(Technique):
    """Mean cross-entropy of softcap * tanh(logits / softcap), computed eagerly in float32."""

    name = "softcap_ce"
    stage = "loss"
    origin_pr = 18
    core_default = True

    @hookimpl(trylast=True)
    def golf_loss_fn(self, ctx):
        return softcapped_cross_entropy
