"""What the scoring pass scores, in which order, and where learning adapters may update.

A :class:`Plan` yields this rank's :class:`Step` s. A step usually carries a :class:`Batch`: rows of
context windows over the validation stream, each row scoring a contiguous run of its targets.
Steps also mark *chunk ends*: points where every rank has finished the same chunk of the stream,
so adapters that learn from whole chunks (score-first TTT) may train on them after the ledger
has made the chunk's scores visible on every rank (``Step.sync``).

Indexing: target ``j`` is token ``j + 1``, predicted from tokens ``0..j``. A row that starts at
token ``s`` with ``length`` inputs holds inputs ``tokens[s : s + length]`` and targets
``s .. s + length - 1``; it scores columns ``[score_lo, score_hi)``, i.e. targets
``s + score_lo .. s + score_hi - 1``.

:class:`WindowPlan` covers every plan made of fixed windows (the default non-overlapping
windows, sliding windows over the flat stream or inside each document), split across ranks and,
when a learner asks for it, grouped into chunks of the stream as in PR #549 / #1493.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """Rows of context windows scored together (one forward)."""

    starts: Tensor  # [B] int64: token index of each row's first input (= its first target index)
    lengths: Tensor  # [B] int64: inputs in the row; columns past it are padding
    score_lo: Tensor  # [B] int64: first scored column
    score_hi: Tensor  # [B] int64: end (exclusive) of the scored columns
    width: int  # padded row length
    docs: Tensor | None = None  # [B] document of each row, when the plan is document-aware
    tag: dict = field(default_factory=dict)  # plan-specific facts (document batch, chunk index, ...)
    # Filled in by the core before the forward:
    x: Tensor | None = None  # [B, width] input ids on the device, 0 in padding
    rows: Tensor | None = None  # [n] row of each scored position, row-major
    cols: Tensor | None = None  # [n] column of each scored position
    targets: Tensor | None = None  # [n] target index of each scored position

    @property
    def size(self) -> int:
        return int(self.starts.numel())

    def scored_counts(self) -> Tensor:
        return (self.score_hi - self.score_lo).clamp(min=0)


@dataclass
class Step:
    """One step of a plan: an optional batch to score, then (optionally) the end of a chunk."""

    batch: Batch | None = None
    chunk: int = -1  # index of the chunk this step closes (-1: not a chunk end)
    num_chunks: int = 0
    chunk_range: tuple[int, int] | None = None  # targets [lo, hi) scored by the chunk, over all ranks
    sync: bool = False  # collective: make chunk_range visible on every rank before learners run
    tag: dict = field(default_factory=dict)

    @property
    def chunk_end(self) -> bool:
        return self.chunk >= 0


class Plan(abc.ABC):
    """Base class: ``steps()`` yields this rank's steps in scoring order."""

    @abc.abstractmethod
    def steps(self) -> Iterator[Step]:
        """This rank's steps, in scoring order."""


def bucket_width(width: int, cap: int) -> int:
    """Pad a batch's width to the next power of two (at most ``cap``): a compiled forward then sees
    a handful of shapes instead of one per window length (padding sits after the inputs, so the
    causal forward gives the real positions the same values)."""
    return min(1 << max(int(width) - 1, 0).bit_length(), max(int(cap), int(width)))


def _batches(starts, lengths, lo, hi, docs, idx: Tensor, rows: int, tag: dict, cap: int) -> Iterator[Batch]:
    for b in range(0, idx.numel(), rows):
        sel = idx[b : b + rows]
        ln = lengths[sel]
        yield Batch(
            starts=starts[sel], lengths=ln, score_lo=lo[sel], score_hi=hi[sel], width=bucket_width(int(ln.max()), cap),
            docs=None if docs is None else docs[sel], tag=dict(tag),
        )


class WindowPlan(Plan):
    """A fixed list of windows, ordered by their first scored target, split across ranks.

    Without chunking (``chunk_tokens <= 0``) each rank scores a contiguous slice of the windows,
    ``batch_rows`` at a time (the baseline's ``eval_val`` split). With chunking, window ``w`` belongs
    to chunk ``min(first_scored(w) // chunk_tokens, C - 1)``; every chunk's windows are split
    contiguously across the ranks, and after its last batch every rank yields a chunk-end step
    that syncs the chunk's targets (PR #1493's ``eval_val_ttt`` schedule).
    """

    def __init__(
        self,
        starts: Tensor,
        lengths: Tensor,
        score_lo: Tensor,
        score_hi: Tensor,
        *,
        num_targets: int,
        batch_rows: int,
        rank: int = 0,
        world_size: int = 1,
        chunk_tokens: int = 0,
        docs: Tensor | None = None,
        tag: dict | None = None,
    ) -> None:
        self.starts, self.lengths = starts.long(), lengths.long()
        self.score_lo, self.score_hi = score_lo.long(), score_hi.long()
        self.docs = docs
        self.num_targets = int(num_targets)
        self.batch_rows = max(int(batch_rows), 1)
        self.rank, self.world_size = rank, world_size
        self.chunk_tokens = int(chunk_tokens)
        self.tag = dict(tag or {})

    @property
    def num_windows(self) -> int:
        return int(self.starts.numel())

    def first_scored(self) -> Tensor:
        return self.starts + self.score_lo

    def steps(self) -> Iterator[Step]:
        n = self.num_windows
        args = (self.starts, self.lengths, self.score_lo, self.score_hi, self.docs)
        cap = int(self.lengths.max()) if n else 1
        if self.chunk_tokens <= 0:
            lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
            for batch in _batches(*args, torch.arange(lo, hi), self.batch_rows, self.tag, cap):
                yield Step(batch=batch)
            return
        num_chunks = max(math.ceil(self.num_targets / self.chunk_tokens), 1)
        chunk_of = torch.clamp(self.first_scored() // self.chunk_tokens, max=num_chunks - 1)
        bounds = torch.searchsorted(chunk_of, torch.arange(num_chunks + 1))
        for c in range(num_chunks):
            a, b = int(bounds[c]), int(bounds[c + 1])
            count = b - a
            my = torch.arange(a + count * self.rank // self.world_size, a + count * (self.rank + 1) // self.world_size)
            for batch in _batches(*args, my, self.batch_rows, {**self.tag, "chunk": c}, cap):
                yield Step(batch=batch)
            if count:
                first = int((self.starts[a:b] + self.score_lo[a:b]).min())
                last = int((self.starts[a:b] + self.score_hi[a:b]).max())
            else:
                first = last = c * self.chunk_tokens
            yield Step(chunk=c, num_chunks=num_chunks, chunk_range=(first, last), sync=True, tag={**self.tag, "chunk": c})


def strided_windows(num_targets: int, seq_len: int, stride: int, offset: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sliding windows over ``num_targets`` targets starting at token ``offset`` (PR #1493's rule).

    Window starts ``ws = 0, stride, 2*stride, ...`` while ``ws + (seq_len - stride) < num_targets``;
    each window holds up to ``seq_len`` inputs and scores its last ``stride`` targets (all of them
    for the first window), so every target is scored exactly once with at least
    ``seq_len - stride`` tokens of context after the first window.
    Returns ``(starts, lengths, score_lo, score_hi)``.
    """
    if num_targets <= 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, empty, empty
    stride = min(stride, seq_len)
    context = seq_len - stride
    ws = torch.arange(0, num_targets, stride, dtype=torch.int64)
    ws = ws[(ws + context < num_targets) | (ws == 0)]
    lengths = torch.clamp(num_targets - ws, max=seq_len)
    score_lo = torch.where(ws == 0, torch.zeros_like(ws), torch.full_like(ws, context))
    return ws + offset, lengths, score_lo, lengths.clone()


def tiled_windows(num_targets: int, seq_len: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Non-overlapping windows of ``seq_len`` targets, every target scored (the baseline's ``eval_val``)."""
    starts = torch.arange(0, max(num_targets, 0), seq_len, dtype=torch.int64)
    lengths = torch.clamp(num_targets - starts, max=seq_len)
    return starts, lengths, torch.zeros_like(starts), lengths.clone()
