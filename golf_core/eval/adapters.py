"""EvalAdapter: how a technique takes part in the final scoring pass without being able to cheat.

The core calls, for each chunk of validation tokens, in this order:

1. ``adjust_logprobs(logprobs, prefix)`` on adapters with ``changes_distribution = True``: they
   receive the model's log-probabilities for the chunk's targets and only the tokens *before*
   them, and must return log-probabilities normalized over the full vocabulary (C1, C2);
2. the core scores the chunk and writes loss and bytes to the ledger;
3. ``learn(tokens)`` on adapters with ``learns = True``, with tokens whose scores are fixed (C3).

Every target is scored once, left to right (C4). ``begin`` and ``end`` bracket the pass.
"""

from __future__ import annotations

from torch import Tensor, nn


class EvalAdapter:
    name: str = ""
    changes_distribution: bool = False
    learns: bool = False

    def begin(self, model: nn.Module, ctx) -> None:
        """Called once before the first chunk."""

    def adjust_logprobs(self, logprobs: Tensor, prefix: Tensor) -> Tensor:
        """Return a normalized replacement for ``logprobs`` ``[T, V]`` given the tokens before them."""
        return logprobs

    def learn(self, tokens: Tensor) -> None:
        """Learn from tokens that have already been scored."""

    def end(self) -> dict:
        """Called once after the last chunk; returns figures for the report."""
        return {}
