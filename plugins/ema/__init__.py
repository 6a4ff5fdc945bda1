"""EMA: exponential moving average of the weights, ema <- d*ema + (1-d)*w after every step, swapped in at train end.

Origin: PR #287 (jfprincz; also credited to PR #401, newjordan), decay 0.997; 0.9965 from PR #1445
and record #1493 on, through #1855. Records: 287 -> TOP.

The average covers every floating-point entry of the model's ``state_dict`` and is kept in a
float32 shadow, initialized from the initial weights (those training starts from, after the
compile warm-up restores them), with no bias correction and no warm-up, as in the records. It is
updated in eager Python after each optimizer step with ``torch._foreach`` ops (a few kernels for
the whole model, never inside the compiled step) and copied into the live tensors (cast to each
one's dtype) at train end, so the pre-quantization evaluation, quantization and the artifact all
use the averaged weights. Half-life at 0.9965: about 198 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from golf_core import Technique, hookimpl, param


class EMA(Technique):
    """EMA: exponential moving average of the weights, ema <- d*ema + (1-d)*w after every step, swapped in at train end."""

    name = "ema"
    stage = "optim"
    origin_pr = 287
    credits = "jfprincz (PR #287); newjordan (PR #401); decay 0.9965 from PR #1445 / #1493"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        decay: float = param(0.9965, "EMA decay d per optimizer step (EMA_DECAY): ema <- d*ema + (1-d)*w")

        def validate(self) -> None:
            if not 0.0 <= self.decay < 1.0:
                raise ValueError(f"decay = {self.decay} must lie in [0, 1)")

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        self._live: list[Tensor] = []
        self._shadow: list[Tensor] = []

    def start(self, model: nn.Module) -> None:
        """Take the float32 shadow of ``model``'s current floating-point state."""
        with torch.no_grad():
            self._live = [t for t in model.state_dict(keep_vars=True).values() if torch.is_floating_point(t)]
            self._live = [t.detach() for t in self._live]
            self._shadow = [t.float().clone() for t in self._live]

    @hookimpl(wrapper=True)
    def golf_build_optimizer(self, model, ctx):
        # The optimizer is built on the final, device-placed model in its initial state; the
        # compile warm-up restores exactly this state before the clock starts.
        bundle = yield
        self.start(model)
        return bundle

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        if not self._shadow:
            raise RuntimeError("ema: no shadow weights; the golf_build_optimizer wrapper did not run")
        d = self.params.decay
        with torch.no_grad():
            live = [t if t.dtype == torch.float32 else t.float() for t in self._live]
            torch._foreach_mul_(self._shadow, d)
            torch._foreach_add_(self._shadow, live, alpha=1.0 - d)

    @hookimpl
    def golf_train_end(self, model, ctx):
        if not self._shadow:
            raise RuntimeError("ema: no shadow weights; the golf_build_optimizer wrapper did not run")
        with torch.no_grad():
            for live, shadow in zip(self._live, self._shadow, strict=True):
                live.copy_(shadow)
        ctx.log(f"ema: applied the average of the weights (decay {self.params.decay})")
        self._live, self._shadow = [], []
