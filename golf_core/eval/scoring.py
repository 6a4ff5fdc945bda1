"""The core scoring pass: bits per byte over the validation stream, adapters, and the ledger.

One left-to-right pass over a :class:`~golf_core.eval.plan.Plan` (the baseline's non-overlapping
windows unless an adapter provides another). For each step: logits of the scored positions,
distribution adapters, scores fixed in the :class:`~golf_core.eval.ledger.ScoreLedger`, then
learners (see :mod:`golf_core.eval.adapters` for the contract). Sums are fp64 and all-reduced;
val_bpb = total nats / (ln 2 x total bytes), bytes from the tokenizer's byte table or a per-token
byte sidecar. The pass is timed and compared with ``run.eval_budget_seconds``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter, EvalSession, Scored
from golf_core.eval.ledger import LegalityError, ScoreLedger
from golf_core.eval.plan import Batch, Plan, WindowPlan, tiled_windows
from golf_core.eval.stream import EvalStream
from golf_core.technique import Legality

# Rows of [n, V] logits scored at a time when no adapter needs the whole distribution: bounds the
# float32 copies at ~2 GB for an 8192 vocabulary.
SCORE_ROWS = 65_536


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    adapters: dict = field(default_factory=dict)
    ledger: dict = field(default_factory=dict)
    budget_seconds: float = 0.0

    @property
    def within_budget(self) -> bool:
        return self.budget_seconds <= 0 or self.seconds <= self.budget_seconds

    def as_dict(self) -> dict:
        out = {
            "val_loss": self.val_loss, "val_bpb": self.val_bpb, "tokens": self.tokens, "bytes": self.bytes,
            "seconds": self.seconds,
        }
        if self.budget_seconds > 0:
            out["budget_seconds"] = self.budget_seconds
            out["within_budget"] = self.within_budget
        if self.adapters:
            out["adapters"] = self.adapters
        if self.ledger:
            out["ledger"] = self.ledger
        return out


def autocast_for(device: torch.device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def declared_legality(adapter: EvalAdapter, ctx) -> Legality:
    """The legality of the technique behind ``adapter``: the registered plugin's under its Params, else the adapter's own."""
    pm = getattr(ctx, "pm", None)
    plugin = pm.get_plugin(adapter.name) if (pm is not None and adapter.name) else None
    legality_for = getattr(plugin, "legality_for", None)
    legality = (legality_for(plugin.params) if callable(legality_for) else getattr(plugin, "legality", None)) or adapter.legality
    return legality if isinstance(legality, Legality) else Legality()


def _one(adapters: list[EvalAdapter], role: str, what: str) -> EvalAdapter | None:
    found = [a for a in adapters if getattr(a, role)]
    if len(found) > 1:
        names = ", ".join(a.name or type(a).__name__ for a in found)
        raise GolfError(f"{names} each {what}; only one adapter per evaluation may do that, disable all but one")
    return found[0] if found else None


def _chunk_tokens(learners: list[EvalAdapter]) -> int:
    wanted = {a.chunk_tokens for a in learners if a.chunk_tokens > 0}
    if len(wanted) > 1:
        detail = ", ".join(f"{a.name}={a.chunk_tokens}" for a in learners if a.chunk_tokens > 0)
        raise GolfError(f"learning adapters ask for different chunk sizes ({detail}); set the same chunk_tokens on each")
    return wanted.pop() if wanted else 0


def default_plan(session: EvalSession) -> Plan:
    """The baseline's split: non-overlapping windows of ``seq_len``, contiguous per rank."""
    stream = session.stream
    starts, lengths, lo, hi = tiled_windows(stream.num_targets, session.seq_len)
    rows = max(session.batch_tokens // (session.world_size * session.seq_len), 1)
    return WindowPlan(
        starts, lengths, lo, hi, num_targets=stream.num_targets, batch_rows=rows,
        rank=session.rank, world_size=session.world_size, chunk_tokens=session.chunk_tokens,
    )


def model_forward(model: nn.Module, batch: Batch, forward_logits=None) -> Tensor:
    """Softcapped logits ``[n, V]`` (float32) of the batch's scored positions from ``forward_logits``."""
    fn = forward_logits or model.forward_logits
    with torch.no_grad(), autocast_for(batch.x.device):
        logits = fn(batch.x)
    if batch.rows.numel() == logits.size(0) * logits.size(1):  # every position scored: a view, no copy
        return logits.reshape(-1, logits.size(-1)).float()
    return logits[batch.rows, batch.cols].float()


def _nll(logits: Tensor, targets: Tensor) -> Tensor:
    out = torch.empty(targets.numel(), dtype=torch.float32, device=logits.device)
    for s in range(0, targets.numel(), SCORE_ROWS):
        out[s : s + SCORE_ROWS] = F.cross_entropy(logits[s : s + SCORE_ROWS].float(), targets[s : s + SCORE_ROWS], reduction="none")
    return out


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
    budget_seconds: float | None = None,
) -> EvalResult:
    """Score ``val_tokens`` (N tokens -> N - 1 targets) with ``model`` and the adapters.

    ``budget_seconds`` defaults to ``run.eval_budget_seconds`` of ``ctx``'s stack when it has one.
    """
    t0 = time.perf_counter()
    device = ctx.device
    adapters = [a for a in adapters if a is not None]
    stream = EvalStream(val_tokens, device=device, byte_table=ctx.byte_table, byte_sidecar=byte_sidecar)
    ledger = stream.ledger
    planner = _one(adapters, "provides_plan", "provides the evaluation plan (context windows)")
    owner = _one(adapters, "owns_forward", "computes the scoring forward itself")
    shifters = [a for a in adapters if a.changes_distribution]
    learners = [a for a in adapters if a.learns]
    legality = {id(a): declared_legality(a, ctx) for a in adapters}
    rescorer = _one(adapters, "target_only", "rescores the target alone")
    target_only = [rescorer] if rescorer is not None else []
    for a in target_only:
        if "C2" not in legality[id(a)].breaks:
            raise LegalityError(
                f"adapter '{a.name}' rescores only the target (target_only) but its technique does not declare "
                "legality.breaks=('C2',); return a normalized distribution from adjust_logprobs instead"
            )
    c2_broken = [a.name for a in shifters if "C2" in legality[id(a)].breaks]
    session = EvalSession(
        model=model, stream=stream, ledger=ledger, ctx=ctx, adapters=adapters, seq_len=seq_len,
        batch_tokens=batch_tokens, chunk_tokens=_chunk_tokens(learners),
    )
    was_training = model.training
    model.eval()
    try:
        for adapter in adapters:
            adapter.begin(session)
        plan = planner.plan(session) if planner is not None else default_plan(session)
        for step in plan.steps():
            batch = step.batch
            scored = None
            if batch is not None:
                stream.materialize(batch)
                logits = owner.forward(model, batch) if owner is not None else model_forward(model, batch, forward_logits)
                with torch.no_grad():
                    logits = logits.detach()
                    y = stream.target_tokens(batch.targets)
                    if shifters or target_only:
                        logprobs = F.log_softmax(logits.float(), dim=-1)
                        for a in shifters:
                            logprobs = a.adjust_logprobs(logprobs, batch, stream)
                        if shifters:
                            ledger.check_normalized(logprobs, [a.name for a in shifters], c2_broken)
                        if rescorer is not None:
                            nll = -rescorer.adjust_target_logprob(logprobs, y, batch, stream)
                        else:
                            nll = -logprobs.gather(1, y[:, None]).squeeze(1)
                    else:
                        nll = _nll(logits, y)
                    ledger.record(batch.targets, nll, stream.target_bytes(batch.targets))
                scored = Scored(step, batch, batch.targets, y, nll, stream)
            if step.sync and step.chunk_range is not None:
                ledger.sync(*step.chunk_range)
            if learners:
                scored = scored or Scored(step, None, None, None, None, stream)
                for a in learners:
                    a.learn(scored)
        summary = ledger.finish()
        reports = {a.name or type(a).__name__: a.end() for a in adapters}
    finally:
        model.train(was_training)
    if budget_seconds is None:
        stack = getattr(ctx, "stack", None)
        budget_seconds = stack.core.run.eval_budget_seconds if stack is not None else 0.0
    return EvalResult(
        summary.loss, summary.bpb, summary.tokens, summary.bytes, time.perf_counter() - t0,
        reports, summary.as_dict(), float(budget_seconds),
    )
