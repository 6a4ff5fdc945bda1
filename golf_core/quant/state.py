"""QuantState: a model's weights after quantization, one :class:`QuantizedTensor` per state-dict key.

Every entry names its *scheme* (how to turn its payload tensors back into a float tensor) and a
human *route* for the artifact report (``"int8 per-row"``, ``"gptq int6 clip=12.85σ"``,
``"fp16 passthrough"``). Schemes are registered functions, so a technique that adds a format
(GPTQ, LQER) registers its dequantizer once and the container, serializer and reloader stay
generic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

DEQUANTIZERS: dict[str, Callable[[QuantizedTensor], Tensor]] = {}


def register_scheme(name: str):
    """Decorator: ``@register_scheme("int8_row") def dequant(qt) -> Tensor``."""

    def wrap(fn: Callable[[QuantizedTensor], Tensor]):
        DEQUANTIZERS[name] = fn
        return fn

    return wrap


@dataclass
class QuantizedTensor:
    scheme: str
    shape: tuple[int, ...]
    dtype: str  # original dtype name, e.g. "float32"
    tensors: dict[str, Tensor]  # payload: q, scale, factors... (CPU, contiguous)
    route: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (bits, clip sigmas, ...)

    def dequantize(self) -> Tensor:
        try:
            fn = DEQUANTIZERS[self.scheme]
        except KeyError:
            raise KeyError(f"no dequantizer registered for scheme {self.scheme!r}") from None
        return fn(self).to(dtype=getattr(torch, self.dtype)).reshape(self.shape)

    def payload_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class QuantState:
    entries: dict[str, QuantizedTensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, QuantizedTensor]]:
        return iter(self.entries.items())

    def dequantize(self) -> dict[str, Tensor]:
        return {name: qt.dequantize() for name, qt in self.entries.items()}

    def routes(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "route": qt.route or qt.scheme, "shape": list(qt.shape), "payload_bytes": qt.payload_bytes()}
            for name, qt in self.entries.items()
        ]


@register_scheme("raw")
def _dequant_raw(qt: QuantizedTensor) -> Tensor:
    return qt.tensors["value"]


@register_scheme("int8_row")
def _dequant_int8_row(qt: QuantizedTensor) -> Tensor:
    q, scale = qt.tensors["q"], qt.tensors["scale"].float()
    return q.float() * scale.view(q.shape[0], *([1] * (q.ndim - 1)))


@register_scheme("int8_tensor")
def _dequant_int8_tensor(qt: QuantizedTensor) -> Tensor:
    return qt.tensors["q"].float() * qt.tensors["scale"].float()


class CalibrationData:
    """Batches of *training* tokens for calibration (GPTQ Hessians); never validation tokens.

    ``batches(n)`` yields ``n`` ``(x, y)`` pairs from a fresh loader over the training shards, on
    the run's device. ``seconds_left()`` is the training budget still available for calibration.
    """

    def __init__(self, make_loader: Callable[[], Any], batch_tokens: int, seq_len: int, seconds_left: Callable[[], float]):
        self._make_loader = make_loader
        self.batch_tokens = batch_tokens
        self.seq_len = seq_len
        self.seconds_left = seconds_left

    def batches(self, n: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = self._make_loader()
        for _ in range(n):
            yield loader.next_batch(self.batch_tokens, self.seq_len, 1)
