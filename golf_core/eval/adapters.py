"""EvalAdapter: how a technique takes part in the final scoring pass without being able to cheat.

The core owns the pass (:func:`golf_core.eval.scoring.evaluate`). For each :class:`~golf_core.eval.plan.Step`
of the plan, in order:

1. **forward**: the logits of the batch's scored positions, ``[n, V]`` softcapped, from the model
   (``model.forward_logits``) or from the one adapter with ``owns_forward`` (LoRA TTT, SLOT),
   which sees only the batch's inputs ``batch.x``;
2. **adjust**: adapters with ``changes_distribution`` map the log-probabilities ``[n, V]`` to new
   ones, normalized over the full vocabulary (C2), from the inputs and
   :meth:`EvalStream.prefix <golf_core.eval.stream.EvalStream.prefix>` only (C1); the ledger checks
   the normalization on sampled rows;
3. **score**: the core reads the targets, writes NLL and bytes to the ledger: the scores are fixed;
4. **learn**: at chunk ends the ledger makes the chunk's scores visible on every rank
   (``Step.sync``); then adapters with ``learns`` get the step in :meth:`EvalAdapter.learn` with
   the scored targets revealed, and fetch anything else through
   :meth:`EvalStream.scored_tokens <golf_core.eval.stream.EvalStream.scored_tokens>`, which the ledger
   refuses for targets not yet scored (C3).

Each target is scored exactly once (C4): the ledger counts and the pass fails otherwise.

Roles (class attributes; an adapter may take several):

``provides_plan``  ``plan(session) -> Plan``: which windows are scored (sliding windows, per-document
                   chunks). At most one adapter per pass.
``owns_forward``   ``forward(model, batch) -> logits [n, V]``: computes the scored positions' logits
                   itself (with gradients kept for its own learning if it wants). At most one.
``changes_distribution``  ``adjust_logprobs(logprobs, batch, stream) -> logprobs``.
``learns``         ``learn(scored)``; ``chunk_tokens > 0`` asks the plan for chunk ends every that
                   many targets (score-first TTT's 32,768).
``target_only``    ``adjust_target_logprob(logprobs, target_tokens, batch, stream) -> [n]``: rescores
                   only the target (a blend that is not a distribution). The core calls it only for a
                   technique whose ``legality.breaks`` includes ``"C2"``.

``legality`` is the technique's :class:`~golf_core.technique.Legality`; the core reads the
registered plugin's (by ``name``) when there is one, so an adapter cannot declare less than its
technique does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from golf_core.eval.ledger import ScoreLedger
    from golf_core.eval.plan import Batch, Plan, Step
    from golf_core.eval.stream import EvalStream
    from golf_core.technique import Legality


@dataclass
class EvalSession:
    """Everything an adapter may use during one pass, handed to :meth:`EvalAdapter.begin`."""

    model: nn.Module
    stream: EvalStream
    ledger: ScoreLedger
    ctx: Any
    adapters: list[EvalAdapter]
    seq_len: int
    batch_tokens: int
    chunk_tokens: int = 0
    shared: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return getattr(self.ctx, "rank", 0)

    @property
    def world_size(self) -> int:
        return getattr(self.ctx, "world_size", 1)

    @property
    def device(self):
        return self.stream.device

    def find(self, name: str) -> EvalAdapter | None:
        """The adapter of technique ``name`` in this pass, if enabled (cooperating techniques)."""
        return next((a for a in self.adapters if a.name == name), None)


@dataclass
class Scored:
    """A finished step, handed to learners: its scores are fixed, so its targets are revealed."""

    step: Step
    batch: Batch | None
    targets: Tensor | None  # [n] target indices scored in this step (None for a pure chunk end)
    target_tokens: Tensor | None  # [n] the tokens those targets predicted
    nll: Tensor | None  # [n] the NLL the ledger recorded (after every adapter), detached
    stream: EvalStream


class EvalAdapter:
    """Base class: override the methods of the roles you take (see the module docstring)."""

    name: str = ""
    provides_plan: bool = False
    owns_forward: bool = False
    changes_distribution: bool = False
    learns: bool = False
    target_only: bool = False
    chunk_tokens: int = 0
    legality: Legality | None = None

    def begin(self, session: EvalSession) -> None:
        """Called once before the plan is built."""

    def plan(self, session: EvalSession) -> Plan:
        raise NotImplementedError(f"{type(self).__name__} sets provides_plan but has no plan()")

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} sets owns_forward but has no forward()")

    def adjust_logprobs(self, logprobs: Tensor, batch: Batch, stream: EvalStream) -> Tensor:
        """Return log-probabilities ``[n, V]`` normalized over the full vocabulary."""
        return logprobs

    def adjust_target_logprob(self, logprobs: Tensor, target_tokens: Tensor, batch: Batch, stream: EvalStream) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} sets target_only but has no adjust_target_logprob()")

    def learn(self, scored: Scored) -> None:
        """Learn from a finished step (its targets are scored)."""

    def end(self) -> dict:
        """Called once after the last step; returns figures for the report."""
        return {}
