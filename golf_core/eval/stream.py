"""The validation stream as the scoring pass exposes it to adapters.

Adapters never index the validation tokens directly. They get

* to **predict**: the inputs of the batch being scored (``batch.x``), and :meth:`EvalStream.prefix`
  for tokens before the targets being scored (n-gram caches), which refuses to reach past the
  last input of the current step;
* to **learn**: the tokens of a finished step handed to ``learn()``, and
  :meth:`EvalStream.scored_tokens` / :meth:`EvalStream.scored_docs`, which ask the ledger first and
  raise :class:`~golf_core.eval.ledger.LegalityError` for any target not yet scored (C3).

Documents are split at BOS (id 1) as in the records' ``_find_docs``: document ``i`` runs from its
BOS to the next document's BOS inclusive, so its targets are ``[start_i, start_{i+1})`` and the
targets of all documents are exactly the ``N - 1`` targets of the stream.
"""

from __future__ import annotations

import torch
from torch import Tensor

from golf_core.eval.ledger import LegalityError, ScoreLedger
from golf_core.eval.plan import Batch

BOS_ID = 1


def find_doc_starts(tokens: Tensor) -> Tensor:
    """Token index of every document start (each BOS; position 0 always starts one), int64 on CPU."""
    starts = (tokens.cpu() == BOS_ID).nonzero().flatten().long()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), starts])
    return starts


class EvalStream:
    """Validation tokens, documents, byte counts and the guarded accessors adapters use."""

    def __init__(
        self,
        tokens: Tensor,
        ledger: ScoreLedger | None = None,
        *,
        device: torch.device | str = "cpu",
        byte_table=None,
        byte_sidecar: Tensor | None = None,
    ) -> None:
        if tokens.numel() < 2:
            raise ValueError("the validation stream needs at least two tokens (one target)")
        self.device = torch.device(device)
        self._tokens = tokens.to(device=self.device, dtype=torch.int64)
        self.num_tokens = int(tokens.numel())
        self.num_targets = self.num_tokens - 1
        starts = find_doc_starts(tokens)
        #: ``[D, 2]``: (token index of the document's BOS, its length including the next BOS), as in
        #: the records; document ``i``'s targets are ``[start, start + length - 1)``.
        ends = torch.cat([starts[1:] + 1, torch.tensor([self.num_tokens])])
        self.docs = torch.stack([starts, ends - starts], dim=1)
        self.doc_starts = starts
        self.ledger = ledger if ledger is not None else ScoreLedger(self.num_targets, self.device, starts)
        self._byte_table = byte_table
        self._byte_sidecar = byte_sidecar.to(self.device) if byte_sidecar is not None else None
        self._visible_end = 0

    @property
    def num_docs(self) -> int:
        return int(self.docs.size(0))

    def doc_targets(self, doc: int) -> tuple[int, int]:
        """Targets ``[lo, hi)`` of document ``doc``."""
        start, length = (int(v) for v in self.docs[doc])
        return start, start + length - 1

    # ---- core side (the scoring pass) --------------------------------------------------------

    def materialize(self, batch: Batch) -> Batch:
        """Fill ``batch.x`` (inputs, 0 in padding) and the scored coordinates, on the device."""
        if bool((batch.score_hi > batch.lengths).any()) or bool((batch.score_lo < 0).any()):
            raise ValueError("a plan row scores columns outside its inputs")
        dev = self.device
        starts, lengths = batch.starts.to(dev), batch.lengths.to(dev)
        cols = torch.arange(batch.width, device=dev)
        idx = starts[:, None] + cols[None, :]
        valid = cols[None, :] < lengths[:, None]
        batch.x = torch.where(valid, self._tokens[idx.clamp(max=self.num_tokens - 1)], 0)
        counts = batch.scored_counts().to(dev)
        rows = torch.repeat_interleave(torch.arange(batch.size, device=dev), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        batch.rows = rows
        batch.cols = batch.score_lo.to(dev)[rows] + torch.arange(rows.numel(), device=dev) - first
        batch.targets = starts[rows] + batch.cols
        scoring = batch.score_hi > batch.score_lo
        if bool(scoring.any()):  # on the CPU copies: no device sync
            last = int((batch.starts + batch.score_hi)[scoring].max())
            self._visible_end = max(self._visible_end, last)
        return batch

    def target_tokens(self, targets: Tensor) -> Tensor:
        """The token each target index predicts (core use: called after the scores are computed)."""
        return self._tokens[targets + 1]

    def target_bytes(self, targets: Tensor) -> Tensor:
        """Bytes of each target: the sidecar's count, else the tokenizer rule on (previous, target)."""
        if self._byte_sidecar is not None:
            return self._byte_sidecar[targets + 1]
        return self._byte_table.token_bytes(self._tokens[targets], self._tokens[targets + 1])

    # ---- adapter side --------------------------------------------------------------------------

    @property
    def visible_end(self) -> int:
        """Tokens ``[0, visible_end)`` are inputs of targets scored or being scored."""
        return self._visible_end

    def prefix(self, end: int, who: str = "adapter") -> Tensor:
        """Tokens ``[0, end)``; ``end`` may not pass the last input of the targets being scored (C1)."""
        if end > self._visible_end:
            raise LegalityError(
                f"C1 violated: adapter '{who}' read tokens up to {end} while only tokens before {self._visible_end} "
                "precede the targets being scored; predict from the prefix only"
            )
        return self._tokens[:end]

    def scored_tokens(self, lo: int, hi: int, who: str) -> Tensor:
        """Inputs and targets of the scored targets ``[lo, hi)``: tokens ``[lo, hi]`` (C3-checked)."""
        self.ledger.require_scored(lo, hi, who)
        return self._tokens[lo : hi + 1]

    def scored_docs(self, docs: Tensor, who: str) -> list[Tensor]:
        """The tokens of whole documents (BOS through the next BOS), each fully scored (C3-checked)."""
        docs = torch.as_tensor(docs, dtype=torch.int64)
        spans = self.docs[docs]
        ranges = torch.stack([spans[:, 0], spans[:, 0] + spans[:, 1] - 1], dim=1)
        self.ledger.require_scored_many(ranges, who)
        return [self._tokens[int(s) : int(s) + int(n)] for s, n in spans.tolist()]
