"""MuonEq-R: what reaches the orthogonalizer has unit rows, and equals the hand-computed normalized Nesterov update."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core import GolfError, hookimpl
from golf_core.optim.bundle import OptimizerBundle
from golf_core.optim.muon import Muon
from golf_core.optim.newton_schulz import newton_schulz5
from golf_core.testing import build_model, make_ctx, make_pm, micro_stack, run_micro


class RecordingOrthogonalizer:
    """Throwaway plugin: the baseline orthogonalizer, keeping a copy of every input."""

    name = "recording_orthogonalizer"

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    @hookimpl
    def golf_orthogonalizer(self, ctx):
        def orthogonalize(G, steps):
            self.inputs.append(G.detach().clone())
            return newton_schulz5(G, steps)

        return orthogonalize


def one_step(enable):
    stack = micro_stack(enable=enable)
    recorder = RecordingOrthogonalizer()
    model, _, _ = build_model(stack, seed=0)
    pm = make_pm(stack, extra_plugins=[recorder])
    ctx = make_ctx(stack, pm)
    bundle = pm.hook.golf_build_optimizer(model=model, ctx=ctx)
    g = torch.Generator().manual_seed(3)
    grads = {}
    for name, p in model.named_parameters():
        # Rows of very different scale, so unnormalized rows are visibly not unit.
        scale = torch.logspace(-3, 2, p.shape[0]).view(-1, *([1] * (p.ndim - 1))) if p.ndim == 2 else 1.0
        p.grad = torch.randn(p.shape, generator=g) * scale
        grads[name] = p.grad.clone()
    bundle.step(0)
    muon = next(o for o in bundle.optimizers if isinstance(o, Muon))
    return recorder.inputs, muon, model, grads


def test_rows_have_unit_norm_before_orthogonalization():
    inputs, muon, model, grads = one_step(["muon_eq_r"])
    n_matrices = sum(len(group["params"]) for group in muon.param_groups)
    assert len(inputs) == n_matrices > 0
    for U in inputs:
        torch.testing.assert_close(U.float().norm(dim=-1), torch.ones(U.shape[0]), rtol=0, atol=1e-5)
    # Hand-computed: at step 0 the buffer is G and momentum the warm-up start m0, so the
    # Nesterov update is G + m0*G and its row-normalized form is G_row / ||G_row||.
    group = muon.param_groups[0]
    assert group["row_normalize"] is True and math.isclose(group["momentum"], 0.85)
    first = group["params"][0]
    name = next(n for n, p in model.named_parameters() if p is first)
    G = grads[name]
    expected = (G + group["momentum"] * G) / (G + group["momentum"] * G).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(inputs[0], expected, rtol=1e-6, atol=1e-7)


def test_without_it_rows_are_not_normalized():
    inputs, muon, _, _ = one_step([])
    assert all(group["row_normalize"] is False for group in muon.param_groups)
    norms = inputs[0].float().norm(dim=-1)
    assert norms.max() / norms.min() > 1e3


def test_refuses_an_optimizer_without_muon_groups():
    class AdamOnly:
        name = "adam_only"

        @hookimpl
        def golf_build_optimizer(self, model, ctx):
            return OptimizerBundle([torch.optim.AdamW(model.parameters(), lr=1e-3)])

    stack = micro_stack(enable=["muon_eq_r"])
    model, _, _ = build_model(stack)
    pm = make_pm(stack, extra_plugins=[AdamOnly()])
    with pytest.raises(GolfError, match="muon_eq_r"):
        pm.hook.golf_build_optimizer(model=model, ctx=make_ctx(stack, pm))


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["muon_eq_r"])
    assert report["steps"] == 3 and math.isfinite(report["val_bpb"])
