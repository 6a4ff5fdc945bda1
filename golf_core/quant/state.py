"""QuantState: a model's weights after quantization, one :class:`QuantizedTensor` per state-dict key.

Every entry names its *scheme* (how to turn its payload tensors back into a float tensor) and a
human *route* for the artifact report (``"int8 per-row"``, ``"gptq (int6)+lqer_asym"``,
``"passthrough (float16)"``). Schemes are registered functions, so a technique that adds a format
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

    def same_as(self, other: QuantizedTensor) -> bool:
        """Bit-exact equality: scheme, shape, dtype, route, meta and every payload tensor's dtype, shape and bytes."""
        if (self.scheme, tuple(self.shape), self.dtype, self.route, self.meta) != (
            other.scheme, tuple(other.shape), other.dtype, other.route, other.meta
        ):
            return False
        if set(self.tensors) != set(other.tensors):
            return False
        for key, t in self.tensors.items():
            o = other.tensors[key]
            if t.dtype != o.dtype or t.shape != o.shape:
                return False
            # Compare raw bytes so that NaN payloads and -0.0 count as equal only when identical.
            if not torch.equal(_as_bytes(t), _as_bytes(o)):
                return False
        return True


@dataclass
class QuantState:
    entries: dict[str, QuantizedTensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, QuantizedTensor]]:
        return iter(self.entries.items())

    def dequantize(self) -> dict[str, Tensor]:
        return {name: qt.dequantize() for name, qt in self.entries.items()}

    def routes(self) -> list[dict[str, Any]]:
        """One row per tensor for the artifact report: route, scheme, shape, payload bytes and an
        order-0 entropy estimate of what the payload costs after compression."""
        return [
            {
                "name": name, "route": qt.route or qt.scheme, "scheme": qt.scheme, "shape": list(qt.shape),
                "payload_bytes": qt.payload_bytes(), "entropy_bytes": entropy_bytes(qt),
            }
            for name, qt in self.entries.items()
        ]

    def same_as(self, other: QuantState) -> bool:
        """Bit-exact equality of two states (entry order included), e.g. ``deserialize(serialize(q))``."""
        return (
            self.meta == other.meta
            and list(self.entries) == list(other.entries)
            and all(qt.same_as(other.entries[name]) for name, qt in self.entries.items())
        )


def _as_bytes(t: Tensor) -> Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def entropy_bytes(qt: QuantizedTensor) -> int:
    """Order-0 entropy of the payload in bytes: int8 tensors by their value histogram, other
    tensors at their raw size (float bytes barely compress). A lower bound on what an ideal
    order-0 coder would need; real compressors land near it for quantized weights."""
    total = 0.0
    for t in qt.tensors.values():
        if t.dtype == torch.int8 and t.numel():
            counts = torch.bincount(t.detach().cpu().reshape(-1).to(torch.int64) + 128, minlength=256).double()
            p = counts[counts > 0] / t.numel()
            total += float(-(p * p.log2()).sum()) * t.numel() / 8.0
        else:
            total += t.numel() * t.element_size()
    return int(round(total))


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
