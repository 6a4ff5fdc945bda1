"""EMA: the closed form after n steps (section J), and the weights a real run hands to quantization."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core import GolfError, hookimpl
from golf_core.testing import build_model, make_ctx, make_pm, micro_stack, run_micro


def test_closed_form_after_n_steps_with_constant_weights():
    d, n = 0.9965, 37
    stack = micro_stack(enable=["ema"], overrides=[f"techniques.ema.decay={d}"])
    model, _, _ = build_model(stack, seed=0)
    pm = make_pm(stack)
    ctx = make_ctx(stack, pm)
    w0 = {k: v.double().clone() for k, v in model.state_dict().items()}
    bundle = pm.hook.golf_build_optimizer(model=model, ctx=ctx)  # takes the shadow of w0
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    w = {k: v.double().clone() for k, v in model.state_dict().items()}
    for step in range(1, n + 1):
        pm.hook.golf_after_optimizer_step(step=step, model=model, optimizer=bundle, ctx=ctx)
    pm.hook.golf_train_end(model=model, ctx=ctx)
    for name, value in model.state_dict().items():
        expected = w[name] + d**n * (w0[name] - w[name])
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    assert d**n < 0.9  # the test moves the weights far enough to notice a missing swap


class Recorder:
    """Throwaway plugin: the initial weights, the live weights after each step, what quantization gets."""

    name = "weight_recorder"

    def __init__(self) -> None:
        self.initial: dict[str, torch.Tensor] = {}
        self.steps: list[dict[str, torch.Tensor]] = []
        self.final: dict[str, torch.Tensor] = {}

    @staticmethod
    def _snapshot(model) -> dict[str, torch.Tensor]:
        return {k: v.detach().double().clone() for k, v in model.state_dict().items()}

    @hookimpl
    def golf_patch_model(self, model, ctx):
        self.initial = self._snapshot(model)

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        self.steps.append(self._snapshot(model))

    @hookimpl
    def golf_refine_quant(self, qstate, model, calib, ctx):
        self.final = self._snapshot(model)


def test_a_run_quantizes_the_average(tmp_path):
    d = 0.5  # short run: a small decay makes every step count, and full LR (no warm-down) moves the weights
    recorder = Recorder()
    overrides = [f"techniques.ema.decay={d}", "techniques.warmdown.warmdown_iters=0"]
    report = run_micro(tmp_path, enable=["ema"], overrides=overrides, extra_plugins=[recorder])
    assert report["steps"] == 3 == len(recorder.steps) and math.isfinite(report["val_bpb"])
    for name, ema in recorder.initial.items():
        for live in recorder.steps:
            ema = d * ema + (1 - d) * live[name]
        torch.testing.assert_close(recorder.final[name], ema, rtol=1e-5, atol=1e-6)
    moved = max((recorder.steps[-1][k] - recorder.final[k]).abs().max().item() for k in recorder.final)
    assert moved > 1e-3  # the average differs from the last live weights


def test_rejects_a_decay_outside_0_1():
    with pytest.raises(GolfError, match="decay"):
        micro_stack(enable=["ema"], overrides=["techniques.ema.decay=1.0"])
