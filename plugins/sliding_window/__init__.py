"""Sliding-window evaluation: every target scored once, with seq_len - stride tokens of context.

Origin: the SlidingWindowEval record (Matthew Li, merged in batch PR #63; later credits also cite
PR #122), stride 64; used by every record from #86 through #1514 (dropped from #1530 on, whose
document-isolated scoring made it unnecessary). The window rule is PR #1493's ``eval_val_sliding``:
window starts ``ws = 0, stride, 2*stride, ...`` while ``ws + seq_len - stride < T``; each window feeds
up to ``seq_len`` inputs and scores its last ``stride`` targets (all of them for the first window),
so each of the ``T`` targets is scored exactly once (the older filter of PR #63 re-scored a tail,
fixed in #1218). Cost: about ``seq_len / stride`` times the forwards of plain evaluation.

With ``doc_aware`` the windows are laid out inside each document (split at BOS) instead of over
the flat stream, so no context crosses a document start, as document-isolated evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from golf_core import Technique, hookimpl, param
from golf_core.eval.adapters import EvalAdapter, EvalSession
from golf_core.eval.plan import WindowPlan, strided_windows


def doc_windows(doc_starts: Tensor, doc_targets: Tensor, seq_len: int, stride: int) -> tuple[Tensor, ...]:
    """:func:`~golf_core.eval.plan.strided_windows` inside every document at once (vectorized).

    ``doc_starts``: token index of each document's BOS; ``doc_targets``: its number of targets.
    Returns ``(starts, lengths, score_lo, score_hi, docs)`` ordered by document, then position.
    """
    stride = min(stride, seq_len)
    context = seq_len - stride
    n = doc_targets.long()
    counts = torch.clamp(torch.div(n - context + stride - 1, stride, rounding_mode="floor"), min=1)
    counts = torch.where(n > 0, counts, torch.zeros_like(counts))
    docs = torch.repeat_interleave(torch.arange(n.numel()), counts)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    ws = (torch.arange(docs.numel()) - first) * stride
    lengths = torch.clamp(n[docs] - ws, max=seq_len)
    score_lo = torch.where(ws == 0, torch.zeros_like(ws), torch.full_like(ws, context))
    return doc_starts.long()[docs] + ws, lengths, score_lo, lengths.clone(), docs


class SlidingWindowPlan(EvalAdapter):
    """Provides the pass's plan: strided windows over the stream or inside each document."""

    name = "sliding_window"
    provides_plan = True

    def __init__(self, stride: int, seq_len: int, batch_windows: int, doc_aware: bool) -> None:
        self.stride, self.seq_len, self.batch_windows, self.doc_aware = stride, seq_len, batch_windows, doc_aware
        self.windows = 0

    def plan(self, session: EvalSession) -> WindowPlan:
        seq_len = self.seq_len or session.seq_len
        stream = session.stream
        docs = None
        if self.doc_aware:
            starts, lengths, lo, hi, docs = doc_windows(stream.docs[:, 0], stream.docs[:, 1] - 1, seq_len, self.stride)
        else:
            starts, lengths, lo, hi = strided_windows(stream.num_targets, seq_len, self.stride)
        self.windows = int(starts.numel())
        self.used_seq_len = seq_len
        return WindowPlan(
            starts, lengths, lo, hi, num_targets=stream.num_targets, batch_rows=self.batch_windows,
            rank=session.rank, world_size=session.world_size, chunk_tokens=session.chunk_tokens, docs=docs,
        )

    def end(self) -> dict:
        return {"windows": self.windows, "stride": self.stride, "seq_len": self.used_seq_len, "doc_aware": self.doc_aware}


class SlidingWindow(Technique):
    """Sliding-window evaluation: every target scored once, with seq_len - stride tokens of context."""

    name = "sliding_window"
    stage = "eval"
    origin_pr = 63
    credits = "Matthew Li (SlidingWindowEval record, batch PR #63); PR #122; window rule of PR #1218 / #1493"
    conflicts = ("lora_ttt",)

    @dataclass(frozen=True, kw_only=True)
    class Params:
        stride: int = param(64, "scored targets per window (EVAL_STRIDE); context is seq_len - stride")
        seq_len: int = param(0, "window length in tokens; 0 = the run's evaluation seq_len (eval.seq_len or train_seq_len)")
        batch_windows: int = param(32, "windows per forward on each rank")
        doc_aware: bool = param(False, "lay windows out inside each document (no context across BOS); the records slide over the flat stream")

        def validate(self) -> None:
            if self.stride <= 0:
                raise ValueError(f"stride = {self.stride} must be positive")
            if self.seq_len < 0:
                raise ValueError(f"seq_len = {self.seq_len} must be 0 (the run's) or positive")
            if self.seq_len and self.stride > self.seq_len:
                raise ValueError(f"stride = {self.stride} is longer than seq_len = {self.seq_len}")
            if self.batch_windows <= 0:
                raise ValueError(f"batch_windows = {self.batch_windows} must be positive")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        p = self.params
        return SlidingWindowPlan(p.stride, p.seq_len, p.batch_windows, p.doc_aware)
