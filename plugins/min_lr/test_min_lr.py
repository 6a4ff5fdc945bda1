"""MinLR: the records' schedule values (section J) and the floor over the whole progress range."""

from __future__ import annotations

import math

import pytest

from golf_core import GolfError
from golf_core.testing import make_ctx, make_pm, micro_stack, run_micro

RECORD = ["techniques.warmdown.warmdown_frac=0.85", "techniques.min_lr.min_lr=0.1"]


def schedule(enable=("min_lr",), overrides=RECORD):
    stack = micro_stack(enable=list(enable), overrides=list(overrides))
    pm = make_pm(stack)
    return pm.hook.golf_lr_schedule(ctx=make_ctx(stack, pm))


def record_lr_mul(frac: float, warmdown_frac: float = 0.85, min_lr: float = 0.1) -> float:
    """PR #1855's lr_mul, transcribed: the independent reference."""
    if frac >= 1.0 - warmdown_frac:
        return max((1.0 - frac) / warmdown_frac, min_lr)
    return 1.0


def test_section_j_values():
    lr_mul = schedule()
    assert lr_mul(0.1) == 1.0
    assert lr_mul(0.15) == pytest.approx(1.0)
    assert lr_mul(0.5) == pytest.approx(0.5 / 0.85)
    assert lr_mul(0.95) == pytest.approx(0.1)


def test_matches_the_record_everywhere_and_is_pure():
    lr_mul = schedule()
    grid = [i / 1000 for i in range(1001)]
    first = [lr_mul(x) for x in grid]
    for x, got in zip(grid, first, strict=True):
        assert got == pytest.approx(record_lr_mul(x), abs=1e-12)
    assert [lr_mul(x) for x in reversed(grid)] == first[::-1]  # no hidden state
    # The floor is reached where (1 - x)/0.85 = 0.1, i.e. x = 0.915, and held to the end.
    assert lr_mul(0.914) > 0.1 and lr_mul(0.916) == 0.1 and lr_mul(1.0) == 0.1


def test_without_it_the_warmdown_reaches_zero():
    lr_mul = schedule(enable=(), overrides=RECORD[:1])
    assert lr_mul(0.95) == pytest.approx(0.05 / 0.85) and lr_mul(1.0) == 0.0


def test_rejects_a_floor_outside_0_1():
    with pytest.raises(GolfError, match="min_lr"):
        micro_stack(enable=["min_lr"], overrides=["techniques.min_lr.min_lr=1.5"])


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["min_lr"], overrides=["techniques.warmdown.warmdown_frac=0.85"])
    assert report["steps"] == 3 and math.isfinite(report["val_bpb"])
