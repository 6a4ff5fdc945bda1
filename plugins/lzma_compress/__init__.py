"""LZMA: the quantized-state container compressed with xz/LZMA2 (preset 9) instead of brotli.

The container (``golf_core.quant.artifact.pack_state``) is compressed with ``lzma.compress`` at
``preset`` (optionally ``| PRESET_EXTREME``) and tagged ``lzma``; the deserializer recognizes only
that tag and returns ``None`` for any other blob.

Origin: parameter-golf PR #160 (ChaseWNorton); records #549 and #1060 (preset 6), #1019 (preset 9);
the top record's ``COMPRESSOR=lzma`` path uses preset 9.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.quant.artifact import pack_state, split_tag, tag_blob, unpack_state
from golf_core.technique import Technique


class LzmaCompress(Technique):
    """LZMA: the quantized-state container compressed with xz/LZMA2 (preset 9) instead of brotli.

    Origin PR #160 (ChaseWNorton); used by records #549, #1019, #1060.
    """

    name = "lzma_compress"
    stage = "quant"
    origin_pr = 160
    credits = "ChaseWNorton (PR #160)"
    conflicts = ("byteshuffle_brotli", "pergroup_compress")
    TAG = "lzma"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        preset: int = param(9, "xz preset 0..9")
        extreme: bool = param(False, "add PRESET_EXTREME (slower, sometimes a little smaller)")

        def validate(self) -> None:
            if not 0 <= self.preset <= 9:
                raise ValueError(f"preset={self.preset} must be between 0 and 9")

    @hookimpl
    def golf_serialize(self, qstate, ctx):
        preset = self.params.preset | (lzma.PRESET_EXTREME if self.params.extreme else 0)
        return tag_blob(self.TAG, lzma.compress(pack_state(qstate), preset=preset))

    @hookimpl
    def golf_deserialize(self, blob, ctx):
        tag, body = split_tag(blob)
        if tag != self.TAG:
            return None
        return unpack_state(lzma.decompress(body))
