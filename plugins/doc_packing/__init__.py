"""Document packing technique package: the plugin class; the loader lives in ``loader.py``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.model.attention import available_backends, get_backend
from golf_core.technique import Technique

from plugins.doc_packing.loader import DocumentPackingLoader, build_cu_seqlens


class DocPacking(Technique):
    """Document packing: one packed row per micro-batch, attention kept inside each document (varlen).

    Each rank's micro-batch is one row of ``local_tokens`` consecutive training tokens (the stream
    starting at a shard's first BOS) with ``cu_seqlens`` at every BOS and every ``train_seq_len``
    tokens inside a document; attention never crosses a segment boundary (FlashAttention-3's
    varlen kernel when installed, else torch's ``varlen_attn``, else SDPA with a block-diagonal
    mask; ``golf_core.model.attention``). The boundary vector is padded to a multiple of
    ``bucket_size`` entries and the compile warm-up runs each of ``warmup_buckets``, so the
    compiled step never recompiles on the clock. Evaluation is unchanged (dense rows).
    Origin PR #1530 (samacqua; first in PR #1354), used by every record since, PR #1855 included.
    """

    name = "doc_packing"
    stage = "data"
    origin_pr = 1530
    credits = "Sam Acquaviva (samacqua, PR #1354 / #1530)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        bucket_size: int = param(64, "cu_seqlens is padded to a multiple of this many entries (cu_bucket_size): fewer compiled shapes")
        warmup_buckets: tuple[int, ...] = param(
            (64, 128, 192, 256), "cu_seqlens lengths compiled during the warm-up (multiples of bucket_size); longer ones compile when first seen"
        )
        max_doc_len: int = param(0, "split documents into segments of at most this many tokens (0 = train.train_seq_len, as the records)")

        def validate(self) -> None:
            if self.bucket_size < 1:
                raise ValueError(f"bucket_size={self.bucket_size} must be at least 1")
            bad = [b for b in self.warmup_buckets if b < 1 or b % self.bucket_size]
            if bad:
                raise ValueError(f"warmup_buckets {bad} must be positive multiples of bucket_size={self.bucket_size}")
            if self.max_doc_len < 0:
                raise ValueError(f"max_doc_len={self.max_doc_len} must be >= 0 (0 = train.train_seq_len)")

    @hookimpl
    def golf_patch_model(self, model, ctx):
        # The batches carry cu_seqlens / max_seqlen for the model's forward; a custom model
        # builder must accept them or attention would silently cross documents.
        accepted = inspect.signature(model.forward).parameters
        if not {"cu_seqlens", "max_seqlen"} <= set(accepted) and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            raise GolfError(
                f"doc_packing: the model's forward ({type(model).__name__}) takes no cu_seqlens/max_seqlen; "
                "use the core GPT or accept them, or disable doc_packing"
            )

    @hookimpl
    def golf_data_loader(self, ctx):
        p = self.params
        return DocumentPackingLoader(
            ctx.train_files, ctx.rank, ctx.world_size, ctx.device,
            bucket_size=p.bucket_size, max_doc_len=p.max_doc_len, warmup_buckets=p.warmup_buckets,
        )

    @hookimpl
    def golf_report_header(self, ctx):
        p = self.params
        forced = get_backend()
        kernel = forced if forced != "auto" else ("/".join(available_backends()) + " (first that fits the device)")
        return [
            f"doc_packing: packed rows, segments <= {p.max_doc_len or ctx.cfg.train.train_seq_len} tokens, "
            f"cu_seqlens bucket {p.bucket_size}, warm-up buckets {list(p.warmup_buckets)}; attention kernel {kernel}"
        ]


__all__ = ["DocPacking", "DocumentPackingLoader", "build_cu_seqlens"]
