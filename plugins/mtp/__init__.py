"""MTP technique package: the plugin class; the heads live in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import nn

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique

from plugins.mtp.module import MTPHeads, build_mtp_heads


class MultiTokenPrediction(Technique):
    """Multi-token prediction: auxiliary heads predict tokens 2..n+1 ahead; weight x their mean CE joins the training loss.

    ``loss = CE(main) + loss_weight * mean_k CE(softcap(W_k h_t), token_{t+k+2})`` for
    ``k < num_heads``, in training mode only, each head scored with the run's loss function. The
    term is a ``loss_terms`` module of the model, computed in its forward from the final hidden
    states (the loss-function hook sees only logits, so it cannot host it), hence inside the
    compiled step with no hook call. The heads (``vocab x dim`` each, zero-initialized, Muon) are
    dropped at train end: quantization, the artifact and evaluation never see them. Origin: the
    ``MTP_NUM_HEADS`` option of the PR #265-#1019 scripts (default off); used by PR #1430
    (2 heads, weight 0.1).
    """

    name = "mtp"
    stage = "loss"
    origin_pr = 1430
    credits = "MTP option of the PR #265-#1019 scripts (unnir, jfprincz, abaybektursun lineage); PR #1430 (2 heads, 0.1)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        num_heads: int = param(2, "auxiliary heads; head k predicts the token k+2 positions ahead (MTP_NUM_HEADS)")
        loss_weight: float = param(0.1, "weight of the heads' mean loss in the training loss (MTP_LOSS_WEIGHT)")

        def validate(self) -> None:
            if self.num_heads < 1:
                raise ValueError(f"num_heads={self.num_heads} must be at least 1; to turn MTP off, disable the technique")
            if self.loss_weight <= 0:
                raise ValueError(f"loss_weight={self.loss_weight} must be positive")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        spec.loss_terms.append(partial(build_mtp_heads, num_heads=self.params.num_heads, loss_weight=self.params.loss_weight))

    @hookimpl(trylast=True)
    def golf_train_end(self, model, ctx):
        # Last of the train-end hooks (after EMA & co.), so the heads leave before quantization.
        terms = getattr(model, "loss_terms", None)
        if terms is None:
            return
        heads = [m for m in terms if isinstance(m, MTPHeads)]
        model.loss_terms = nn.ModuleList([m for m in terms if not isinstance(m, MTPHeads)])
        count = sum(len(m.mtp_heads) for m in heads)
        dropped = sum(p.numel() for m in heads for p in m.parameters())
        ctx.log(f"mtp: dropped {count} heads ({dropped:,} parameters) before quantization")


__all__ = ["MTPHeads", "MultiTokenPrediction"]
