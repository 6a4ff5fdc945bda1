"""Core default post-train path: int8 per-row quantization and a brotli-compressed container."""

from __future__ import annotations

import math
from dataclasses import dataclass

import brotli

from golf_core.config import param
from golf_core.hookspecs import hookimpl
from golf_core.model.gpt import is_control_tensor
from golf_core.quant.artifact import pack_state, split_tag, tag_blob, unpack_state
from golf_core.quant.int8 import KEEP_FLOAT_MAX_NUMEL, quantize_state_dict_int8
from golf_core.technique import Technique


class Int8RowQuant(Technique):
    """int8 per-row for matrices, per-tensor for other large tensors, fp16/fp32 passthrough for small ones."""

    name = "int8_rowwise"
    stage = "quant"
    origin_pr = 18
    core_default = True
    estimate_kind = "payload"  # estimate_tensor_bytes: raw payload bytes, before brotli (golf check's label)


    @hookimpl(trylast=True)
    def golf_quantize(self, model, calib, ctx):
        return quantize_state_dict_int8(model.state_dict())

    def estimate_tensor_bytes(self, name: str, shape: tuple[int, ...]) -> int:
        """Uncompressed payload bytes of one float tensor under this scheme (for ``golf check``)."""
        numel = math.prod(shape)
        if numel <= KEEP_FLOAT_MAX_NUMEL:
            return numel * (4 if is_control_tensor(name) else 2)
        if len(shape) == 2:
            return numel + 2 * shape[0]  # int8 weights + one fp16 scale per row
        return numel + 4  # int8 weights + one fp32 scale


class BrotliSerializer(Technique):
    """The quantized-state container compressed with brotli."""

    name = "brotli"
    stage = "quant"
    core_default = True
    TAG = "brotli"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        quality: int = param(11, "brotli quality 0..11")

    @hookimpl(trylast=True)
    def golf_serialize(self, qstate, ctx):
        return tag_blob(self.TAG, brotli.compress(pack_state(qstate), quality=self.params.quality))

    @hookimpl(trylast=True)
    def golf_deserialize(self, blob, ctx):
        tag, body = split_tag(blob)
        if tag != self.TAG:
            return None
        return unpack_state(brotli.decompress(body))
