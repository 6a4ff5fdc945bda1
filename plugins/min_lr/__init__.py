"""MinLR: floor the learning-rate multiplier, lr_mul = max(schedule(progress), min_lr).

Origin: PR #1787 (nprime06) set MIN_LR=0.1; the knob (default 0) came with the fraction
warm-down of PR #1218 (clarkkev). Kept by #1851/#1855/#1868.

The records' schedule (PR #1855 ``lr_mul``) is ``1`` before progress ``1 - WARMDOWN_FRAC`` and
``max((1 - progress) / WARMDOWN_FRAC, MIN_LR)`` after; since the multiplier is 1 before the
warm-down, that equals ``max(schedule(progress), min_lr)`` over the core ``warmdown`` schedule
with ``warmdown_frac`` set, which is what this technique wraps. With the records' settings
(``warmdown_frac = 0.85``, ``min_lr = 0.1``) the multiplier is 1 until progress 0.15, falls
linearly and holds at 0.1 from progress 0.915.
"""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import Technique, hookimpl, param


class MinLR(Technique):
    """MinLR: floor the learning-rate multiplier, lr_mul = max(schedule(progress), min_lr)."""

    name = "min_lr"
    stage = "optim"
    origin_pr = 1787
    credits = "nprime06 (PR #1787, MIN_LR=0.1); clarkkev (PR #1218, the knob and the fraction warm-down)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        min_lr: float = param(0.1, "lowest LR multiplier the schedule may reach (MIN_LR), as a fraction of each group's base lr")

        def validate(self) -> None:
            if not 0.0 <= self.min_lr <= 1.0:
                raise ValueError(f"min_lr = {self.min_lr} must lie in [0, 1]")

    @hookimpl(wrapper=True)
    def golf_lr_schedule(self, ctx):
        schedule = yield
        floor = self.params.min_lr

        def floored(progress: float) -> float:
            return max(schedule(progress), floor)

        return floored
