"""Per-sample SLOT: per window, fit a hidden-state delta and a logit bias to the window, then score.

Origin: SLOT (Score-Optimized Last-layer Tuning, arXiv:2505.12392) in parameter-golf; the
per-sample variant of PR #1430 (renqianluo): for each window of a batch, the final hidden states
are computed once with the frozen model, then a ``[1, C]`` hidden delta and a ``[1, V]`` logit bias
per window are optimized with AdamW for ``steps`` steps (cosine learning rate from ``lr`` to
``lr_min``, betas (0.6, 0.5)) to minimize the mean cross-entropy of the window's scored positions,
predicting each next token of the window; the scored positions are then scored with the fitted
delta and bias: ``logits = softcap(head(h + delta)) + bias``.

Not legal, and declared so: the delta is fitted on the very tokens it then scores, so the score
of position t depends on tokens after t in the window (C1; PR #1240 showed flipping a target
changes other positions' predictions) and on an update that used its own token (C3). Reproduced so
the PR #1430 stack can run; ``golf check`` reports such a stack as non-compliant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from golf_core import Legality, Technique, hookimpl, param
from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter, EvalSession
from golf_core.eval.plan import Batch
from golf_core.eval.scoring import autocast_for

LEGALITY = Legality(
    reads=("validation: each window's own tokens, scored targets included, before they are scored",),
    breaks=("C1", "C3"),
    reason=(
        "per-sample SLOT fits a hidden delta and logit bias to each window's tokens, including the targets it then "
        "scores: a score depends on later tokens of its window (C1, PR #1240) and on an update that saw its own "
        "token (C3)"
    ),
)


class SlotAdapter(EvalAdapter):
    """Owns the forward: fits the per-window delta and bias, returns the scored positions' logits."""

    name = "slot"
    owns_forward = True
    legality = LEGALITY

    def __init__(self, p) -> None:
        self.p = p
        self.windows = 0
        self.final_loss = 0.0

    def begin(self, session: EvalSession) -> None:
        model = session.model
        if not all(hasattr(model, a) for a in ("hidden", "head", "logit_softcap")):
            raise GolfError("slot needs a model with hidden(), head() and logit_softcap (the baseline GPT's API)")

    def _logits(self, model, h: Tensor, delta: Tensor, bias: Tensor) -> Tensor:
        raw = model.head(h + delta.to(h.dtype)).float()
        return model.logit_softcap * torch.tanh(raw / model.logit_softcap) + bias

    def forward(self, model, batch: Batch) -> Tensor:
        p = self.p
        x = batch.x
        bsz, width = x.shape
        with torch.no_grad(), autocast_for(x.device):
            h = model.hidden(x).detach()
        vocab = int(model.tok_emb.num_embeddings)
        delta = torch.zeros(bsz, 1, h.size(-1), device=x.device, dtype=torch.float32, requires_grad=True)
        bias = torch.zeros(bsz, 1, vocab, device=x.device, dtype=torch.float32, requires_grad=p.logit_bias)
        params = [delta, bias] if p.logit_bias else [delta]
        opt = torch.optim.AdamW(params, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay)
        # Positions whose next token is in the window and which the plan scores (PR #1430's mask).
        cols = torch.arange(width - 1, device=x.device)
        lo, hi = batch.score_lo.to(x.device), batch.score_hi.to(x.device)
        length = batch.lengths.to(x.device)
        mask = ((cols[None] >= lo[:, None]) & (cols[None] < hi[:, None]) & (cols[None] + 1 < length[:, None])).float()
        targets = x[:, 1:]
        with torch.enable_grad():
            for step in range(p.steps):
                if p.steps > 1:
                    lr = p.lr_min + (p.lr - p.lr_min) * 0.5 * (1 + math.cos(math.pi * step / (p.steps - 1)))
                    for group in opt.param_groups:
                        group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                with autocast_for(x.device):
                    logits = self._logits(model, h[:, :-1], delta, bias)
                nll = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1), reduction="none")
                loss = (nll.reshape(bsz, width - 1) * mask).sum() / mask.sum().clamp(min=1.0)
                loss.backward()
                opt.step()
                self.final_loss = float(loss.detach())
        self.windows += bsz
        with torch.no_grad(), autocast_for(x.device):
            rows, cols_s = batch.rows, batch.cols
            return self._logits(model, h[rows, cols_s], delta.detach()[rows, 0], bias.detach()[rows, 0]).float()

    def end(self) -> dict:
        return {"windows": self.windows, "last_fit_loss": self.final_loss}


class Slot(Technique):
    """Per-sample SLOT: per window, fit a hidden-state delta and a logit bias to the window, then score."""

    name = "slot"
    stage = "eval"
    origin_pr = 1430
    credits = "renqianluo (PR #1430, per-sample SLOT); SLOT: Hu et al., arXiv:2505.12392"
    conflicts = ("lora_ttt",)
    legality = LEGALITY

    @dataclass(frozen=True, kw_only=True)
    class Params:
        steps: int = param(24, "AdamW steps per window batch (SLOT_STEPS)")
        lr: float = param(0.432, "peak learning rate (SLOT_LR)")
        lr_min: float = param(0.001, "final learning rate of the cosine schedule (SLOT_LR_MIN)")
        beta1: float = param(0.6, "AdamW beta1 (SLOT_BETA1)")
        beta2: float = param(0.5, "AdamW beta2 (SLOT_BETA2_PS)")
        eps: float = param(1e-5, "AdamW epsilon")
        weight_decay: float = param(1e-8, "AdamW weight decay")
        logit_bias: bool = param(True, "also fit a per-window [V] logit bias (per-sample SLOT); false: the hidden delta only")

        def validate(self) -> None:
            if self.steps < 0 or self.lr < 0 or self.lr_min < 0:
                raise ValueError("steps, lr and lr_min must be >= 0")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return SlotAdapter(self.params)
