"""Byte-shuffle + brotli: group the k-th bytes of every multi-byte value together, then brotli-11.

float16 scales and passthrough tensors compress poorly as interleaved (high byte, low byte) pairs;
shuffling puts all high bytes (sign, exponent: few distinct values) in one run and all low bytes in
another. By default each payload tensor of the container is shuffled by its own element size (int8
codes are untouched, float16 by 2, float32 by 4) and the header stays readable; ``per_tensor =
false`` applies the records' transform instead: the whole container with stride 2 (all even-index
bytes, then all odd-index bytes). The result is compressed with brotli and tagged ``bshf-brotli``.

Origin: parameter-golf PR #1089 (mikeapedia), records #1204 and #1218 through #1868 (the top
record's brotli path dropped the shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass

import brotli
import numpy as np

from golf_core import hookimpl
from golf_core.config import param
from golf_core.quant.artifact import container_layout, element_size, pack_state, split_tag, tag_blob, unpack_state
from golf_core.technique import Technique


def shuffle_bytes(data: bytes, stride: int) -> bytes:
    """``data[0::stride] + data[1::stride] + ...``: the k-th byte of every value, for k = 0, 1, ..."""
    if stride <= 1 or len(data) < stride:
        return data
    src = np.frombuffer(data, dtype=np.uint8)
    return b"".join(src[k::stride].tobytes() for k in range(stride))


def unshuffle_bytes(data: bytes, stride: int) -> bytes:
    if stride <= 1 or len(data) < stride:
        return data
    src = np.frombuffer(data, dtype=np.uint8)
    n = len(src)
    out = np.empty(n, dtype=np.uint8)
    off = 0
    for k in range(stride):
        count = n // stride + (1 if k < n % stride else 0)
        out[k::stride] = src[off : off + count]
        off += count
    return out.tobytes()


def _map_tensors(raw: bytes, fn) -> bytes:
    """Apply ``fn(segment, element_size)`` to every payload tensor's bytes of a container."""
    header, start = container_layout(raw)
    out = bytearray(raw)
    for entry in header["entries"].values():
        for t in entry["tensors"].values():
            size = element_size(t["dtype"])
            a, b = start + t["offset"], start + t["offset"] + t["nbytes"]
            if size > 1 and b > a:
                out[a:b] = fn(bytes(raw[a:b]), size)
    return bytes(out)


class ByteshuffleBrotli(Technique):
    """Byte-shuffle + brotli: group the k-th bytes of every multi-byte value together, then brotli-11.

    Origin PR #1089 (mikeapedia); records #1204, #1218 -> #1868.
    """

    name = "byteshuffle_brotli"
    stage = "quant"
    origin_pr = 1089
    credits = "mikeapedia (PR #1089)"
    conflicts = ("lzma_compress", "pergroup_compress")
    TAG = "bshf-brotli"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        quality: int = param(11, "brotli quality 0..11")
        lgwin: int = param(22, "brotli window bits 10..24")
        per_tensor: bool = param(True, "shuffle each payload tensor by its element size; false = the records' stride-2 shuffle of the whole container")

        def validate(self) -> None:
            if not 0 <= self.quality <= 11:
                raise ValueError(f"quality={self.quality} must be between 0 and 11")
            if not 10 <= self.lgwin <= 24:
                raise ValueError(f"lgwin={self.lgwin} must be between 10 and 24")

    @hookimpl
    def golf_serialize(self, qstate, ctx):
        raw = pack_state(qstate)
        shuffled = _map_tensors(raw, shuffle_bytes) if self.params.per_tensor else shuffle_bytes(raw, 2)
        mode = b"T" if self.params.per_tensor else b"2"
        return tag_blob(self.TAG, mode + brotli.compress(shuffled, quality=self.params.quality, lgwin=self.params.lgwin))

    @hookimpl
    def golf_deserialize(self, blob, ctx):
        tag, body = split_tag(blob)
        if tag != self.TAG:
            return None
        mode, data = body[:1], brotli.decompress(body[1:])
        raw = _map_tensors(data, unshuffle_bytes) if mode == b"T" else unshuffle_bytes(data, 2)
        return unpack_state(raw)
