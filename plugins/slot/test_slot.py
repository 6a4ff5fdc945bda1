"""slot: with no steps it is plain scoring, the fit lowers the window loss, the declared C1 break is
real (a score moves when later tokens of its window change), and a micro run."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_after
from golf_core.testing import run_micro
from plugins.slot import Slot, SlotAdapter


def params(**kw):
    return Slot.Params(**{"steps": 8, **kw})


@pytest.fixture(scope="module")
def setup():
    return micro_eval_setup(n_tokens=400)


def test_zero_steps_is_plain_scoring(setup) -> None:
    model, ctx, tokens = setup
    _, plain = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256)
    _, nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[SlotAdapter(params(steps=0))])
    torch.testing.assert_close(nll, plain, rtol=1e-5, atol=1e-5)


def test_fitting_the_window_lowers_its_loss(setup) -> None:
    model, ctx, tokens = setup
    plain, _ = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256)
    res, _ = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[SlotAdapter(params())])
    assert res.val_loss < plain.val_loss - 0.3  # it fits the very tokens it scores
    assert res.adapters["slot"]["windows"] == math.ceil(399 / 64)


def test_the_declared_c1_break_is_real(setup) -> None:
    """Changing tokens after t changes the score at t (same window): what legality.breaks says."""
    model, ctx, tokens = setup
    _, base = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[SlotAdapter(params())])
    t = 150  # window [128, 192): targets 128..149 precede the change
    _, moved = per_target_nll(model, perturb_after(tokens, t, 1024), ctx, seq_len=64, batch_tokens=256, adapters=[SlotAdapter(params())])
    assert not torch.allclose(moved[128:t], base[128:t], atol=1e-4)
    assert set(Slot.legality.breaks) == {"C1", "C3"}


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        params(steps=-1).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(tmp_path, enable=["slot"], overrides=["techniques.slot.steps=4"])
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"] and adapted["adapters"]["slot"]["windows"] == 16
    assert adapted["val_bpb"] < report["post_quant"]["val_bpb"]
