"""PR #1530's document-packing loader: one packed row per micro-batch with document boundaries.

Sequential over the sorted train shards (wrapping around), as PR #1855 trains. A shard's stream
starts at its first BOS. Each call takes a global span of ``world_size * (local_tokens + 1)``
tokens from the cursor; rank ``r`` owns the ``r``-th ``local_tokens + 1`` of it and returns
``x = span[:-1]``, ``y = span[1:]`` as one row ``[1, local_tokens]`` plus ``cu_seqlens``: segment
starts at 0, at every BOS inside ``x`` and every ``max_doc_len`` tokens within a document, then
``local_tokens``, padded with ``local_tokens`` to a multiple of ``bucket_size`` entries so that the
compiled graph sees a few shapes only. A global span that would run past the end of a shard skips
to the next shard (the records' rule: spans never straddle shards). The next shard is read on a
background thread while the current one is consumed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from golf_core.data.shards import BOS_ID, read_shard
from golf_core.errors import GolfError


# One reader thread for every loader in the process (the records' shard pool).
_SHARD_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="golf-doc-packing")


def _load_shard(path: Path, bos_id: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = read_shard(path)
    return tokens, np.flatnonzero(tokens == bos_id)


def build_cu_seqlens(doc_starts: np.ndarray | Sequence[int], total: int, max_doc_len: int, bucket_size: int) -> tuple[np.ndarray, int]:
    """Segment boundaries of a packed row of ``total`` tokens, padded; returns ``(cu, num_segments)``.

    ``doc_starts``: sorted positions of the BOS tokens in the row. Segments start at 0, at each
    document start and every ``max_doc_len`` tokens inside a document (0 = never split); ``cu`` is
    the int32 vector ``[starts..., total, total, ...]`` whose length is the next multiple of
    ``bucket_size`` that holds ``num_segments + 1`` entries.
    """
    if total <= 0:
        raise GolfError(f"a packed row needs at least one token, got {total}")
    starts = np.union1d(np.asarray(doc_starts, dtype=np.int64), np.zeros(1, dtype=np.int64))
    starts = starts[(starts >= 0) & (starts < total)]
    ends = np.append(starts[1:], total)
    if max_doc_len > 0:
        pieces = -(-(ends - starts) // max_doc_len)  # ceil: pieces of at most max_doc_len tokens
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        seg_starts = np.repeat(starts, pieces) + (np.arange(int(pieces.sum())) - first) * max_doc_len
    else:
        seg_starts = starts
    n = seg_starts.size + 1
    padded = -(-n // bucket_size) * bucket_size
    cu = np.full(padded, total, dtype=np.int32)
    cu[: seg_starts.size] = seg_starts
    return cu, int(seg_starts.size)


class DocumentPackingLoader:
    """Per-rank packed rows with ``cu_seqlens``; see the module docstring for the exact order."""

    def __init__(
        self,
        files: Sequence[str | Path],
        rank: int,
        world_size: int,
        device: torch.device | str,
        *,
        bucket_size: int = 64,
        max_doc_len: int = 0,
        warmup_buckets: Sequence[int] = (64, 128, 192, 256),
        bos_id: int = BOS_ID,
    ) -> None:
        if not files:
            raise GolfError("doc_packing: no training shards; run `golf data prepare` or fix data.dataset")
        if world_size < 1 or not 0 <= rank < world_size:
            raise GolfError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size}); check RANK and WORLD_SIZE")
        self.files = [Path(f) for f in files]
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.bucket_size = bucket_size
        self.max_doc_len = max_doc_len
        self.warmup_buckets = tuple(warmup_buckets)
        self.bos_id = bos_id
        self._file_idx = -1
        self._pending: tuple[int, Future] | None = None
        self._advance_shard()

    def _shard(self, idx: int) -> Future:
        """The shard ``idx`` (tokens, BOS positions), from the prefetch when it is that one."""
        if self._pending is not None and self._pending[0] == idx:
            return self._pending[1]
        return _SHARD_POOL.submit(_load_shard, self.files[idx], self.bos_id)

    def _advance_shard(self) -> None:
        """Load the next shard with a BOS (wrapping around) and put the cursor on its first BOS."""
        for _ in range(len(self.files)):
            self._file_idx = (self._file_idx + 1) % len(self.files)
            current = self._shard(self._file_idx)
            tokens, bos = current.result()
            following = (self._file_idx + 1) % len(self.files)
            # Read the following shard in the background; a single shard is simply kept.
            self._pending = (following, current if following == self._file_idx else self._shard(following))
            if bos.size:
                self.tokens, self.bos_idx, self.cursor = tokens, bos, int(bos[0])
                return
        raise GolfError(
            f"doc_packing: no BOS token ({self.bos_id}) in any of the {len(self.files)} training shards from {self.files[0]}; "
            "documents must start with BOS (re-create the shards with `golf data prepare`)"
        )

    def _take(self, local_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's ``local_tokens + 1`` tokens of the next global span, and its BOS positions."""
        span = local_tokens + 1
        global_span = span * self.world_size
        for _ in range(len(self.files) + 1):
            if self.cursor + global_span <= self.tokens.size:
                break
            self._advance_shard()
        else:
            raise GolfError(
                f"doc_packing: a global span of {global_span} tokens ({self.world_size} ranks x {span}) does not fit in any "
                f"training shard after its first BOS; use larger shards or a smaller train.train_batch_tokens"
            )
        start = self.cursor + self.rank * span
        local = np.asarray(self.tokens[start : start + span], dtype=np.int64)
        lo, hi = np.searchsorted(self.bos_idx, [start, start + local_tokens], side="left")
        self.cursor += global_span
        return local, self.bos_idx[lo:hi] - start

    def _local_tokens(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> int:
        if seq_len < 1 or grad_accum_steps < 1:
            raise GolfError(f"seq_len ({seq_len}) and grad_accum_steps ({grad_accum_steps}) must be positive")
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local < seq_len or local % seq_len:
            raise GolfError(
                f"batch of {global_tokens} tokens gives {local} tokens per rank per micro-step (world_size={self.world_size}, "
                f"grad_accum_steps={grad_accum_steps}), not a positive multiple of seq_len={seq_len}; "
                f"make the batch a multiple of {self.world_size * grad_accum_steps * seq_len}"
            )
        return local

    def segment_limit(self, seq_len: int) -> int:
        """Longest segment: ``max_doc_len``, or the training sequence length when it is 0."""
        return self.max_doc_len or seq_len

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``x, y`` of shape ``[1, local_tokens]`` (int64) and ``{"cu_seqlens", "max_seqlen"}``, on the device."""
        local_tokens = self._local_tokens(global_tokens, seq_len, grad_accum_steps)
        local, doc_starts = self._take(local_tokens)
        limit = self.segment_limit(seq_len)
        cu, _ = build_cu_seqlens(doc_starts, local_tokens, limit, self.bucket_size)
        buf = torch.from_numpy(local)
        x = buf[:-1].view(1, -1).to(self.device, non_blocking=True)
        y = buf[1:].view(1, -1).to(self.device, non_blocking=True)
        # max_seqlen is a constant (not this batch's longest segment): one graph for the whole run.
        return x, y, {"cu_seqlens": torch.from_numpy(cu).to(self.device, non_blocking=True), "max_seqlen": limit}

    def warmup_batches(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
        """One batch per ``cu_seqlens`` length in ``warmup_buckets`` that a batch can have (PR #1855's warm-up).

        The tokens are the next real batch; the boundaries are every ``max_doc_len`` tokens,
        padded to the bucket, so each yields the graph the run compiles for that length.
        """
        local_tokens = self._local_tokens(global_tokens, seq_len, grad_accum_steps)
        x, y, _ = self.next_batch(global_tokens, seq_len, grad_accum_steps)
        limit = self.segment_limit(seq_len)
        minimal, _ = build_cu_seqlens([], local_tokens, limit, 1)
        for bucket in self.warmup_buckets:
            if bucket < minimal.size or bucket % self.bucket_size:
                continue  # no batch can have this length
            cu = np.full(bucket, local_tokens, dtype=np.int32)
            cu[: minimal.size] = minimal
            yield x, y, {"cu_seqlens": torch.from_numpy(cu).to(self.device), "max_seqlen": limit}
