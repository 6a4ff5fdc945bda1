"""Bits per byte: the per-token byte table of the challenge, and the tokenizer loader it needs.

``val_bpb = total NLL [nats] / (ln 2 * total bytes)``. The bytes of each target token come from the
SentencePiece pieces (:class:`ByteTable`), with the challenge's rule: a piece's leading ``▁`` is one
byte of space, counted only when the previous token is not a boundary (so never right after BOS);
byte-fallback pieces are one byte; control, unknown and unused pieces are zero.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from golf_core.errors import GolfError

SPACE_MARK = "\u2581"  # SentencePiece's "▁"


@dataclass(frozen=True)
class ByteTable:
    """Per-token-id byte lookup tables (all the same length, on one device)."""

    base_bytes: torch.Tensor  # int16: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # bool: the piece starts with "▁"
    is_boundary: torch.Tensor  # bool: control/unknown/unused id (BOS, EOS, PAD, UNK, ids past the vocab)

    @classmethod
    def from_sentencepiece(cls, sp: spm.SentencePieceProcessor, vocab_size: int | None = None) -> ByteTable:
        """Build the table exactly as the reference ``build_sentencepiece_luts`` does.

        The table has ``max(sp.vocab_size(), vocab_size)`` entries; ids beyond the tokenizer's
        vocabulary (a model's padded embedding rows) are boundaries worth zero bytes.
        """
        sp_size = int(sp.vocab_size())
        size = max(sp_size, int(vocab_size or 0))
        base = np.zeros(size, dtype=np.int16)
        space = np.zeros(size, dtype=np.bool_)
        boundary = np.ones(size, dtype=np.bool_)
        for tid in range(sp_size):
            if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
                continue
            boundary[tid] = False
            if sp.is_byte(tid):
                base[tid] = 1
                continue
            piece = sp.id_to_piece(tid)
            if piece.startswith(SPACE_MARK):
                space[tid] = True
                piece = piece[1:]
            base[tid] = len(piece.encode("utf-8"))
        return cls(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))

    @property
    def size(self) -> int:
        """Number of token ids the table covers."""
        return int(self.base_bytes.numel())

    def to(self, device: torch.device | str) -> ByteTable:
        """The same table on ``device``."""
        return ByteTable(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    def token_bytes(self, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Bytes of each target token given the token before it (same shape as ``target_ids``, int32)."""
        prev = prev_ids.long()
        tgt = target_ids.long()
        extra = self.has_leading_space[tgt] & ~self.is_boundary[prev]
        return self.base_bytes[tgt].to(torch.int32) + extra.to(torch.int32)


def bits_per_byte(total_nats: float, total_bytes: float) -> float:
    """Total negative log-likelihood in nats over the byte count, in bits per byte."""
    if total_bytes <= 0:
        raise ValueError(f"bits_per_byte needs a positive byte count, got {total_bytes}")
    return float(total_nats) / (math.log(2.0) * float(total_bytes))


def load_tokenizer(path: str | os.PathLike[str]) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model, with a one-line error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise GolfError(f"tokenizer not found: {path}; pass --tokenizer or set data.tokenizer")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GolfError(
            f"tokenizer {path} is not a readable SentencePiece model ({detail}); pass --tokenizer or set data.tokenizer"
        ) from None
