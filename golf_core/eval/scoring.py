"""The core scoring pass: bits per byte over the validation stream, with a ledger.

The validation stream is cut into non-overlapping windows of ``seq_len`` targets (the baseline's
``eval_val``); each rank scores a contiguous range of windows; sums are float64 and all-reduced.
val_bpb = total nats / (ln 2 x total bytes), with bytes from the tokenizer's byte table (or a
per-token byte sidecar when the dataset has one).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.eval.adapters import EvalAdapter


@dataclass
class Ledger:
    """Running sums of the scoring pass; every scored target adds exactly once."""

    nats: float = 0.0
    tokens: int = 0
    bytes: int = 0
    chunks: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, nll: Tensor, nbytes: Tensor) -> None:
        self.nats += float(nll.double().sum())
        self.tokens += int(nll.numel())
        self.bytes += int(nbytes.sum())
        self.chunks += 1

    def all_reduce(self, device: torch.device) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        sums = torch.tensor([self.nats, float(self.tokens), float(self.bytes)], dtype=torch.float64, device=device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        self.nats, self.tokens, self.bytes = float(sums[0]), int(sums[1]), int(sums[2])

    @property
    def loss(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def bpb(self) -> float:
        return self.nats / (math.log(2.0) * self.bytes) if self.bytes else float("nan")


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    adapters: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "val_loss": self.val_loss, "val_bpb": self.val_bpb, "tokens": self.tokens, "bytes": self.bytes,
            "seconds": self.seconds, **({"adapters": self.adapters} if self.adapters else {}),
        }


def autocast_for(device: torch.device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    val_tokens: Tensor,
    ctx,
    *,
    seq_len: int,
    batch_tokens: int,
    adapters: list[EvalAdapter] = (),  # type: ignore[assignment]
    byte_sidecar: Tensor | None = None,
    forward_logits=None,
) -> EvalResult:
    """Score ``val_tokens`` (N+1 tokens -> N targets) with ``model`` and the adapters."""
    t0 = time.perf_counter()
    device = ctx.device
    forward_logits = forward_logits or model.forward_logits
    total_seqs = (val_tokens.numel() - 1) // seq_len
    first = total_seqs * ctx.rank // ctx.world_size
    last = total_seqs * (ctx.rank + 1) // ctx.world_size
    seqs_per_batch = max(batch_tokens // (ctx.world_size * seq_len), 1)
    table = ctx.byte_table
    ledger = Ledger()
    was_training = model.training
    model.eval()
    for adapter in adapters:
        adapter.begin(model, ctx)
    shifters = [a for a in adapters if a.changes_distribution]
    learners = [a for a in adapters if a.learns]
    for start in range(first, last, seqs_per_batch):
        end = min(start + seqs_per_batch, last)
        raw = val_tokens[start * seq_len : end * seq_len + 1].to(device=device, dtype=torch.int64)
        x = raw[:-1].reshape(-1, seq_len)
        y = raw[1:].reshape(-1, seq_len)
        with autocast_for(device):
            logits = forward_logits(x)
        logprobs = F.log_softmax(logits.float(), dim=-1).reshape(-1, logits.size(-1))
        for adapter in shifters:
            logprobs = adapter.adjust_logprobs(logprobs, raw[:-1])
        nll = -logprobs.gather(1, y.reshape(-1, 1)).squeeze(1)
        if byte_sidecar is not None:
            nbytes = byte_sidecar[start * seq_len + 1 : end * seq_len + 1].to(device)
        else:
            nbytes = table.token_bytes(x.reshape(-1), y.reshape(-1))
        ledger.add(nll, nbytes)  # the score is fixed here, before any adapter learns
        for adapter in learners:
            adapter.learn(raw)
    ledger.all_reduce(device)
    model.train(was_training)
    reports = {a.name or type(a).__name__: a.end() for a in adapters}
    return EvalResult(ledger.loss, ledger.bpb, ledger.tokens, ledger.bytes, time.perf_counter() - t0, reports)
