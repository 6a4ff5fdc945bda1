"""The score ledger: what the scoring pass has scored, so the four conditions can be checked.

Targets are indexed by ``j`` in ``[0, N)``: target ``j`` is token ``j + 1`` of the validation stream,
predicted from tokens ``0..j``. The ledger keeps

* running fp64 sums of NLL (nats), scored targets and bytes;
* a per-target count (``uint8``, one byte per target: 40 MB for the full validation set) of how
  many times each target was scored on this rank, and a ``visible`` map of targets known to be
  scored on *some* rank (this rank's own scores, plus what :meth:`sync` gathered from the others).

What it checks, and when:

* **C3, score before update**: an adapter may only learn from targets whose score is fixed.
  Every path by which an adapter obtains training tokens (:meth:`EvalStream.scored_tokens
  <golf_core.eval.stream.EvalStream.scored_tokens>`) calls :meth:`require_scored`, which raises
  :class:`LegalityError` naming the adapter, the first unscored target, its document and the
  scored frontier of that document.
* **C4, each target scored exactly once**: :meth:`finish` sums the counts over ranks and
  requires every count to be exactly 1 (so the scored-target total equals the sum over documents
  of their length minus one); :meth:`require_scored` also rejects targets already scored twice.
* **C2, normalized**: :meth:`check_normalized` samples a few rows of every distribution an
  adapter changed and requires ``sum(exp(logprobs)) == 1`` within a tolerance; an adapter that
  declares it breaks C2 is measured instead of rejected, and the worst deviation is reported.
* **C1, causal**, cannot be checked cheaply at run time; every adapter's tests prove it by
  perturbation (changing tokens after ``t`` leaves the score at ``t`` unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from golf_core.errors import GolfError

# log(sum(exp(logprobs))) of a normalized float32 row over 8192 ids is within ~1e-6 of 0; 1e-4
# leaves room for bf16-produced logits while still catching any real renormalization bug.
C2_TOLERANCE = 1e-4
# Rows sampled per step for the C2 check: cheap (a few logsumexps) and, over thousands of steps,
# thorough.
C2_SAMPLE_ROWS = 4


class LegalityError(GolfError):
    """An adapter broke a condition of the evaluation rules that it did not declare."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass
class LedgerSummary:
    """What the ledger proved about one scoring pass (part of the report)."""

    nats: float
    tokens: int
    bytes: int
    expected_tokens: int
    exactly_once: bool
    learn_checks: int
    c2_rows_checked: int
    c2_max_deviation: float
    c2_declared_broken_by: list[str] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def bpb(self) -> float:
        return self.nats / (math.log(2.0) * self.bytes) if self.bytes else float("nan")

    def as_dict(self) -> dict:
        out = {
            "scored_tokens": self.tokens,
            "expected_tokens": self.expected_tokens,
            "exactly_once": self.exactly_once,
            "learn_checks": self.learn_checks,
            "c2_rows_checked": self.c2_rows_checked,
            "c2_max_deviation": self.c2_max_deviation,
        }
        if self.c2_declared_broken_by:
            out["c2_declared_broken_by"] = list(self.c2_declared_broken_by)
        return out


class ScoreLedger:
    """Per-target bookkeeping of one scoring pass (see the module docstring)."""

    def __init__(self, num_targets: int, device: torch.device, doc_starts: Tensor | None = None) -> None:
        self.num_targets = int(num_targets)
        self.device = device
        self.counts = torch.zeros(self.num_targets, dtype=torch.uint8, device=device)
        self.visible = torch.zeros(self.num_targets, dtype=torch.bool, device=device)
        # Document starts (target index of each document's first target), for error messages.
        self.doc_starts = doc_starts.cpu() if doc_starts is not None else torch.zeros(1, dtype=torch.int64)
        self._nats = torch.zeros((), dtype=torch.float64, device=device)
        self._tokens = torch.zeros((), dtype=torch.float64, device=device)
        self._bytes = torch.zeros((), dtype=torch.float64, device=device)
        self._c2_dev = torch.zeros((), dtype=torch.float64, device=device)
        self.c2_rows = 0
        self.c2_declared: list[str] = []
        self.learn_checks = 0
        self.finished = False

    # ---- scoring ------------------------------------------------------------------------------

    def record(self, targets: Tensor, nll: Tensor, nbytes: Tensor) -> None:
        """Fix the scores of ``targets`` (target indices): add their NLL and bytes, count them once."""
        if self.finished:
            raise LegalityError("the scoring pass is finished; nothing more can be scored (C4: single pass)")
        targets = targets.to(self.device)
        self.counts.index_add_(0, targets, torch.ones_like(targets, dtype=torch.uint8))
        self.visible[targets] = True
        self._nats += nll.detach().double().sum()
        self._tokens += float(targets.numel())
        self._bytes += nbytes.double().sum()

    def check_normalized(self, logprobs: Tensor, changed_by: list[str], declared_broken: list[str]) -> None:
        """C2 on a few sampled rows of ``logprobs`` ``[n, V]`` (log-probabilities after the adapters).

        ``changed_by`` names the adapters that changed these rows; ``declared_broken`` those of them
        whose technique declares it breaks C2 (measured, not rejected).
        """
        n = logprobs.size(0)
        if n == 0:
            return
        rows = torch.unique(torch.linspace(0, n - 1, steps=min(C2_SAMPLE_ROWS, n), device=logprobs.device).long())
        dev = torch.logsumexp(logprobs[rows].double(), dim=-1).abs().max()
        self.c2_rows += int(rows.numel())
        if declared_broken:
            for name in declared_broken:
                if name not in self.c2_declared:
                    self.c2_declared.append(name)
            self._c2_dev = torch.maximum(self._c2_dev, dev)
            return
        value = float(dev)
        self._c2_dev = torch.maximum(self._c2_dev, dev)
        if not value <= C2_TOLERANCE:
            raise LegalityError(
                f"C2 violated: after {', '.join(changed_by)} a scored distribution sums to "
                f"{math.exp(value) if value < 50 else float('inf'):.6g} instead of 1 over the vocabulary "
                f"(|log sum p| = {value:.3g} > {C2_TOLERANCE}); return log-probabilities normalized over the full "
                "vocabulary, or declare legality.breaks=('C2',) on the technique"
            )

    # ---- learning -----------------------------------------------------------------------------

    def _doc_of(self, target: int) -> int:
        return int(torch.searchsorted(self.doc_starts, torch.tensor([target]), right=True)[0]) - 1

    def _frontier(self, doc: int) -> int:
        """First target of document ``doc`` not yet visible as scored (its end if all are)."""
        lo = int(self.doc_starts[doc]) if doc >= 0 else 0
        hi = int(self.doc_starts[doc + 1]) if doc + 1 < self.doc_starts.numel() else self.num_targets
        missing = (~self.visible[lo:hi]).nonzero()
        return lo + int(missing[0]) if missing.numel() else hi

    def require_scored(self, lo: int, hi: int, who: str) -> None:
        """Raise :class:`LegalityError` unless every target in ``[lo, hi)`` is already scored (C3)."""
        self.learn_checks += 1
        if lo < 0 or hi > self.num_targets or lo > hi:
            raise LegalityError(
                f"adapter '{who}' asked to learn from targets [{lo}, {hi}), outside the validation targets [0, {self.num_targets})"
            )
        if hi == lo:
            return
        missing = (~self.visible[lo:hi]).nonzero()
        if missing.numel():
            first = lo + int(missing[0])
            doc = self._doc_of(first)
            raise LegalityError(
                f"C3 violated: adapter '{who}' asked to learn from target {first} (token {first + 1}, document {doc}) "
                f"before it was scored; the scored frontier of document {doc} is target {self._frontier(doc)}. "
                "Adapters may only learn from tokens handed to learn() or obtained through stream.scored_tokens() "
                "after the core has scored them"
            )
        twice = (self.counts[lo:hi] > 1).nonzero()
        if twice.numel():
            first = lo + int(twice[0])
            raise LegalityError(f"C4 violated: target {first} (document {self._doc_of(first)}) was scored more than once")

    def require_scored_many(self, ranges: Tensor, who: str) -> None:
        """:meth:`require_scored` for each ``[lo, hi)`` row of ``ranges`` ``[K, 2]``, vectorized."""
        if ranges.numel() == 0:
            return
        ranges = ranges.to(self.device).long()
        lengths = ranges[:, 1] - ranges[:, 0]
        if bool((lengths < 0).any()) or int(ranges.min()) < 0 or int(ranges.max()) > self.num_targets:
            raise LegalityError(f"adapter '{who}' asked to learn from target ranges outside [0, {self.num_targets})")
        owner = torch.repeat_interleave(torch.arange(ranges.size(0), device=self.device), lengths)
        offsets = torch.arange(owner.numel(), device=self.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        idx = ranges[owner, 0] + offsets
        ok = self.visible[idx]
        if not bool(ok.all()):
            bad = int(owner[(~ok).nonzero()[0]])
            self.require_scored(int(ranges[bad, 0]), int(ranges[bad, 1]), who)
        self.learn_checks += 1

    def sync(self, lo: int = 0, hi: int | None = None) -> None:
        """Collective: make targets ``[lo, hi)`` scored on *any* rank visible here (before learning from them).

        Every rank must call it with the same range at the same point of the pass.
        """
        hi = self.num_targets if hi is None else hi
        if not _distributed() or hi <= lo:
            return
        part = self.visible[lo:hi].to(torch.uint8)
        dist.all_reduce(part, op=dist.ReduceOp.MAX)
        self.visible[lo:hi] = part.bool()

    # ---- end of the pass ----------------------------------------------------------------------

    def finish(self) -> LedgerSummary:
        """All-reduce the sums and the counts; C4: every target scored exactly once over all ranks."""
        self.finished = True
        sums = torch.stack([self._nats, self._tokens, self._bytes])
        dev = self._c2_dev.clone()
        counts = self.counts
        if _distributed():
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            dist.all_reduce(dev, op=dist.ReduceOp.MAX)
            # int32: uint8 sums would wrap past 255 ranks' worth of double scoring.
            counts = counts.to(torch.int32)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        exactly_once = bool((counts == 1).all())
        summary = LedgerSummary(
            nats=float(sums[0]), tokens=int(round(float(sums[1]))), bytes=int(round(float(sums[2]))),
            expected_tokens=self.num_targets, exactly_once=exactly_once, learn_checks=self.learn_checks,
            c2_rows_checked=self.c2_rows, c2_max_deviation=float(dev), c2_declared_broken_by=list(self.c2_declared),
        )
        if not exactly_once:
            unscored = (counts == 0).nonzero()
            repeated = (counts > 1).nonzero()
            parts = []
            if unscored.numel():
                first = int(unscored[0])
                parts.append(f"{unscored.numel()} targets never scored (first: target {first}, document {self._doc_of(first)})")
            if repeated.numel():
                first = int(repeated[0])
                parts.append(f"{repeated.numel()} targets scored more than once (first: target {first}, document {self._doc_of(first)})")
            raise LegalityError(
                f"C4 violated: each of the {self.num_targets} targets must be scored exactly once; " + "; ".join(parts)
            )
        return summary
