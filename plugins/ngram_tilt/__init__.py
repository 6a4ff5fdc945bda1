"""N-gram tilt: boost one causally predicted hint token, p'(a) = p(a) exp(beta [a = h]) / Z.

Origin: the eval-time n-gram cache lineage of PR #1145 (AnirudhRahul) -> PR #1105 / #1420
(abaybektursun, fused expert kernel) -> PR #1437 / #1514 (dexhunter; the causal fix of the
within-word and word-start experts, which PR #1420's kernel gated on the *target* token, a C1 leak
worth about 0.0028 BPB). Record #1514 runs it with the within/word betas at 0 ("token-only tilt").

For each scored position ``p`` a hint token ``h`` and a boost ``beta >= 0`` are computed from the
tokens before ``p`` only (see :mod:`plugins.ngram_tilt.hints`: a token expert over contexts of
orders 8..16, a within-word and a word-start expert); the model's distribution is tilted towards
``h`` and renormalized over the whole vocabulary::

    p'(a) = p(a) exp(beta 1[a = h]) / Z,   Z = 1 + p(h) (e^beta - 1)
    NLL'  = NLL + log Z - beta 1[y = h]

Positions without a hint keep ``p``. The distribution stays normalized (C2) and depends only on
the prefix (C1). Hints are generated incrementally as the scoring pass reveals the prefix, with
vectorized numpy (no compiled extension): with ``lazy_orders = false`` they equal the reference
C++ kernel's (where its 16-bit counts do not wrap), by default they differ only where the kernel's
weak context hash collides, 3 positions per million.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from golf_core import Legality, Technique, hookimpl, param
from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter, EvalSession
from golf_core.eval.plan import Batch
from golf_core.eval.stream import EvalStream
from plugins.ngram_tilt.hints import HintGenerator

EXPERTS = ("token", "within", "word")


def tilt_logprobs(logprobs: Tensor, hints: Tensor, betas: Tensor) -> Tensor:
    """``log p'`` for rows ``[n, V]`` with hint ids ``[n]`` (-1: none) and boosts ``[n]`` (float64)."""
    has = hints >= 0
    safe = hints.clamp(min=0)
    lp_h = logprobs.gather(1, safe[:, None]).squeeze(1).double()
    beta = torch.where(has, betas.double(), torch.zeros_like(betas, dtype=torch.float64))
    log_z = torch.log1p(torch.exp(lp_h) * torch.expm1(beta))  # log(1 + p(h) (e^beta - 1)), fp64
    out = logprobs - log_z.to(logprobs.dtype)[:, None]
    boost = torch.where(has, beta, torch.zeros_like(beta)).to(logprobs.dtype)
    return out.scatter_add(1, safe[:, None], boost[:, None])


class NgramTiltAdapter(EvalAdapter):
    """Tilts each scored distribution towards its causal n-gram hint."""

    name = "ngram_tilt"
    changes_distribution = True

    def __init__(self, p) -> None:
        self.p = p
        self.seconds = 0.0
        self.hinted = 0
        self.scored = 0

    def begin(self, session: EvalSession) -> None:
        table = getattr(session.ctx, "byte_table", None)
        if table is None:
            raise GolfError("ngram_tilt needs the tokenizer's byte table (word boundaries); the run context has none")
        p = self.p
        self.gen = HintGenerator(
            table.has_leading_space.cpu().numpy(), table.is_boundary.cpu().numpy(),
            base_beta=p.base_beta, agree_bonus=p.agree_bonus, within_threshold=p.within_threshold,
            within_beta=p.within_beta, word_threshold=p.word_threshold, word_beta=p.word_beta,
            min_order=p.min_order, max_order=p.max_order, order_stride=p.order_stride,
            thresholds=p.thresholds, min_counts=p.min_counts, threshold_scale=p.threshold_scale,
            experts=p.experts, lazy_orders=p.lazy_orders, expected_positions=session.stream.num_tokens,
        )
        self.mirror = np.zeros(session.stream.num_tokens, dtype=np.int64)  # CPU copy of the prefix read so far
        self.have = 0

    def adjust_logprobs(self, logprobs: Tensor, batch: Batch, stream: EvalStream) -> Tensor:
        t0 = time.perf_counter()
        positions = batch.targets + 1  # the token each scored distribution predicts
        end = stream.visible_end  # == the last scored target + 1
        if end > self.have:
            self.mirror[self.have : end] = stream.prefix(end, self.name)[self.have : end].cpu().numpy()
            self.have = end
        self.gen.advance(self.mirror, end)
        pos = positions.cpu().numpy()
        hint = torch.from_numpy(self.gen.hint[pos]).to(logprobs.device)
        beta = torch.from_numpy(self.gen.beta[pos]).to(logprobs.device)
        out = tilt_logprobs(logprobs, hint, beta)
        self.hinted += int((hint >= 0).sum())
        self.scored += int(pos.size)
        self.seconds += time.perf_counter() - t0
        return out

    def end(self) -> dict:
        return {
            "hinted_fraction": self.hinted / max(self.scored, 1),
            "seconds": self.seconds,
            "positions_generated": int(self.gen.cursor) if hasattr(self, "gen") else 0,
        }


class NgramTilt(Technique):
    """N-gram tilt: boost one causally predicted hint token, p'(a) = p(a) exp(beta [a = h]) / Z."""

    name = "ngram_tilt"
    stage = "eval"
    origin_pr = 1420
    credits = (
        "AnirudhRahul (PR #1145 lineage); abaybektursun (PR #1105 / #1420 fused expert kernel and causal fix); "
        "dexhunter (PR #1437 / #1514, token-only tilt)"
    )
    legality = Legality(reads=("validation: the tokens before each scored position (its prefix)",))

    @dataclass(frozen=True, kw_only=True)
    class Params:
        base_beta: float = param(2.0, "token-expert boost: beta = base_beta * confidence (NGRAM_BASE_BETA)")
        agree_bonus: float = param(0.1, "added to a candidate's beta when another expert hints the same token")
        within_threshold: float = param(0.25, "within-word expert: minimum confidence")
        within_beta: float = param(0.0, "within-word expert boost (record #1514: 0; kernel default 0.92)")
        word_threshold: float = param(0.8, "word-start expert: minimum confidence")
        word_beta: float = param(0.0, "word-start expert boost (record #1514: 0; kernel default 0.5)")
        min_order: int = param(8, "lowest token-expert context order")
        max_order: int = param(16, "highest token-expert context order")
        order_stride: int = param(2, "use every n-th order from min_order (2: orders 8, 10, 12, 14, 16)")
        thresholds: tuple[float, ...] = param(
            (0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5), "minimum confidence per order, min_order..max_order"
        )
        min_counts: tuple[int, ...] = param((3, 3, 3, 2, 2, 2, 2, 2, 2), "minimum context count per order, min_order..max_order")
        threshold_scale: float = param(1.0, "multiplies every token-expert threshold (token_threshold_scale)")
        experts: tuple[str, ...] = param(EXPERTS, "experts that propose hints: token, within, word")
        lazy_orders: bool = param(
            True, "process an order only where the order below was seen before: ~3x faster; differs from the "
            "kernel only where its weak XOR context hash collides (3 positions per million); false = the kernel's hints"
        )

        def validate(self) -> None:
            span = self.max_order - self.min_order + 1
            if self.min_order < 1 or span < 1:
                raise ValueError(f"orders {self.min_order}..{self.max_order}: need 1 <= min_order <= max_order")
            if self.max_order > 32:
                raise ValueError(f"max_order = {self.max_order}: at most 32 (the kernel's prime table)")
            if len(self.thresholds) != span or len(self.min_counts) != span:
                raise ValueError(f"thresholds and min_counts need one entry per order {self.min_order}..{self.max_order} ({span})")
            if self.order_stride < 1:
                raise ValueError(f"order_stride = {self.order_stride} must be >= 1")
            unknown = set(self.experts) - set(EXPERTS)
            if unknown or "token" not in self.experts:
                raise ValueError(f"experts = {self.experts}: must include 'token'; choose from {EXPERTS}")
            if min(self.base_beta, self.within_beta, self.word_beta, self.agree_bonus) < 0:
                raise ValueError("betas and agree_bonus must be >= 0 (a tilt away from the hint is not this technique)")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return NgramTiltAdapter(self.params)
