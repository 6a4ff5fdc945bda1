"""OptimizerBundle: the several optimizers of a run stepped as one.

The trainer only talks to the bundle: ``set_lr_multiplier(m)`` before a step sets every group's
``lr`` to ``base_lr * m``; ``step(step)`` applies per-group momentum warm-up, gradient clipping,
then every optimizer; ``state_dict()`` / ``load_state_dict()`` let the compile warm-up restore
the initial state.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class OptimizerBundle:
    def __init__(
        self,
        optimizers: list[torch.optim.Optimizer],
        *,
        params: list[nn.Parameter] | None = None,
        grad_clip_norm: float = 0.0,
    ) -> None:
        self.optimizers = optimizers
        self.params = params if params is not None else [p for o in optimizers for g in o.param_groups for p in g["params"]]
        self.grad_clip_norm = grad_clip_norm
        for group in self.param_groups():
            group.setdefault("base_lr", group["lr"])

    def param_groups(self):
        for opt in self.optimizers:
            yield from opt.param_groups

    def set_lr_multiplier(self, multiplier: float) -> None:
        for group in self.param_groups():
            group["lr"] = group["base_lr"] * multiplier

    def _warm_momentum(self, step: int) -> None:
        # Groups that ask for it ramp momentum linearly from momentum_warmup_start to
        # momentum_target over momentum_warmup_steps (Muon in the records).
        for group in self.param_groups():
            steps = group.get("momentum_warmup_steps", 0)
            if "momentum_target" not in group:
                continue
            frac = min(step / steps, 1.0) if steps > 0 else 1.0
            group["momentum"] = (1 - frac) * group["momentum_warmup_start"] + frac * group["momentum_target"]

    def step(self, step: int) -> None:
        self._warm_momentum(step)
        if self.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)
