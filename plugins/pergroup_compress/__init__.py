"""Per-group compression: code matrices grouped by role, rows L1-similarity sorted, transposed, lrzip/ZPAQ each.

The int8 code matrices of the quantized state are split into groups by role (every layer's
``attn.c_q.weight`` together, every ``mlp.fc.weight`` together, the embedding alone), the rows of
the "hot" groups (``tok_emb``, ``attn.c_q``, ``mlp.fc``) are reordered so that similar rows sit next to
each other (greedy L1 nearest neighbour; the permutation is stored), every matrix is written
column-major, and each group is compressed on its own with ``lrzip -z -L 9`` (ZPAQ, long-range
matching across layers) when the program is installed, else with brotli (window 2^24). Everything
else (scales, passthrough tensors, gates, LQER factors) goes to a brotli "remainder" stream. On the
top record this is about 280 KB smaller than plain brotli, for about 75 s more serialize time.

Origin: parameter-golf PR #1855 (codemath3000; the code credits PR #1586 via #1667/#1729).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.quant.artifact import split_tag, tag_blob
from golf_core.technique import Technique

from .pergroup import LRZIP_MISSING, Codec, deserialize, lrzip_available, serialize


class PergroupCompress(Technique):
    """Per-group compression: code matrices grouped by role, rows L1-similarity sorted, transposed, lrzip/ZPAQ each.

    Origin PR #1855 (codemath3000), ported there from PR #1586 via #1667/#1729.
    """

    name = "pergroup_compress"
    stage = "quant"
    origin_pr = 1855
    credits = "codemath3000 (PR #1855); dexhunter (PR #1586), MarioPaerle (#1667), romeerp (#1729)"
    conflicts = ("lzma_compress", "byteshuffle_brotli")
    TAG = "pergroup"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        backend: str = param(
            "auto", "group compressor: auto = lrzip if installed, else brotli",
            choices=("auto", "lrzip", "brotli"),
        )
        lrzip_level: int = param(9, "lrzip -L level 1..9 (ZPAQ back end, -z)")
        brotli_quality: int = param(11, "brotli quality of the remainder (and of the groups with the brotli back end)")
        simsort: tuple[str, ...] = param(
            ("tok_emb.weight", "attn.c_q.weight", "mlp.fc.weight"),
            "groups (layer index folded, matched as a name suffix) whose rows are similarity-sorted",
        )
        min_group_numel: int = param(65_536, "int8 code matrices with more elements than this are grouped")
        transpose: bool = param(True, "write each grouped matrix column-major")
        workers: int = param(0, "threads compressing groups in parallel (0 = one per group, up to the CPU count)")

        def validate(self) -> None:
            if not 1 <= self.lrzip_level <= 9:
                raise ValueError(f"lrzip_level={self.lrzip_level} must be between 1 and 9")
            if not 0 <= self.brotli_quality <= 11:
                raise ValueError(f"brotli_quality={self.brotli_quality} must be between 0 and 11")
            if self.workers < 0:
                raise ValueError(f"workers={self.workers} must be >= 0")

    def backend(self) -> str:
        """The back end this run uses; ``lrzip`` asked for and absent is a GolfError naming the package."""
        if self.params.backend == "lrzip" and not lrzip_available():
            raise GolfError(f"techniques.pergroup_compress.backend = 'lrzip' but {LRZIP_MISSING}, or set backend = 'brotli'")
        if self.params.backend == "auto":
            return "lrzip" if lrzip_available() else "brotli"
        return self.params.backend

    @hookimpl
    def golf_configure(self, ctx):
        self.backend()  # fail before training, not after it

    @hookimpl
    def golf_report_header(self, ctx):
        return [f"pergroup_compress: back end {self.backend()}"]

    @hookimpl
    def golf_serialize(self, qstate, ctx):
        p = self.params
        backend = self.backend()
        t0 = time.perf_counter()
        body = serialize(
            qstate, Codec(backend, p.lrzip_level, p.brotli_quality), simsort=p.simsort,
            min_group_numel=p.min_group_numel, transpose=p.transpose, sort_device=ctx.device, workers=p.workers,
        )
        ctx.log(f"pergroup_compress: {len(body):,} B with {backend} in {time.perf_counter() - t0:.1f}s")
        return tag_blob(self.TAG, body)

    @hookimpl
    def golf_deserialize(self, blob, ctx):
        tag, body = split_tag(blob)
        if tag != self.TAG:
            return None
        return deserialize(body, workers=self.params.workers)
