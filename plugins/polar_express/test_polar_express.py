"""Polar Express: the coefficient schedule's bounds (section J), the matrix iteration against an SVD reference, and a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golf_core import GolfError
from golf_core.optim.newton_schulz import QUINTIC_COEFFS, newton_schulz5, scalar_map
from golf_core.testing import make_ctx, make_pm, micro_stack, run_micro
from plugins.polar_express import PE_COEFFS, polar_express

# The minimax error of the five tuples is 0.14113 (they equioscillate between 1 -+ it on
# [1e-3, 1]); section J rounds it to [0.859, 1.141], a hair inside the true extremes 0.858873 /
# 1.141127, so the bound below is that interval rounded outwards at the 4th decimal.
LOW, HIGH = 0.8588, 1.1412


def grid() -> np.ndarray:
    return np.unique(np.concatenate([np.geomspace(1e-3, 1.0, 200_001), np.linspace(1e-3, 1.0, 200_001)]))


def test_composed_scalar_map_stays_within_minimax_band():
    y = scalar_map(grid(), PE_COEFFS)
    assert y.min() >= LOW and y.max() <= HIGH
    # Equioscillation: the extremes are symmetric about 1 (the mark of the minimax solution).
    assert abs((y.min() + y.max()) - 2.0) < 1e-6
    assert 0.14 < y.max() - 1.0 < 0.1412


def test_classic_coefficients_fail_the_band():
    y = scalar_map(grid(), (QUINTIC_COEFFS,) * 5)
    assert y.min() < 0.5  # small singular values are left far from 1 (0.47 at x = 1e-3)
    assert y.max() > HIGH
    assert not (y.min() >= LOW and y.max() <= HIGH)


def test_matches_svd_reference_in_float64():
    # Independent reference: the iteration acts on singular values only, f(G) = U p(S/||G||_F) V^T.
    g = torch.Generator().manual_seed(1)
    G = torch.randn(96, 40, generator=g, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    reference = U @ torch.diag(scalar_map(S / torch.linalg.norm(G), PE_COEFFS)) @ Vh
    out = polar_express(G, 5, eps=0.0, dtype=torch.float64)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-10)


def test_gaussian_2048x512_singular_values():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(2048, 512, generator=g)
    # The production path (bfloat16 iterations), read back in float32: rounding widens the band a
    # little; the classic schedule misses its lower edge by far (smallest singular value ~0.73).
    sv = torch.linalg.svdvals(polar_express(G).float())
    assert sv.min() >= 0.85 and sv.max() <= 1.15
    assert torch.linalg.svdvals(newton_schulz5(G).float()).min() < 0.8
    # The same iteration in float32 follows the scalar map: inside the minimax band.
    sv32 = torch.linalg.svdvals(polar_express(G, dtype=torch.float32))
    assert sv32.min() >= LOW and sv32.max() <= HIGH


def test_invariant_to_transposing_the_input():
    g = torch.Generator().manual_seed(2)
    G = torch.randn(384, 128, generator=g)
    assert torch.equal(polar_express(G.T), polar_express(G).T)
    bank = torch.randn(3, 64, 160, generator=g)  # a weight bank: batch of wide matrices
    assert torch.equal(polar_express(bank.mT), polar_express(bank).mT)
    for i in range(3):  # each bank slice normalized on its own, as the records do
        torch.testing.assert_close(polar_express(bank)[i].float(), polar_express(bank[i]).float(), rtol=0, atol=0)


def test_step_count_and_the_hook():
    assert polar_express(torch.randn(8, 8), 5).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="steps=6"):
        polar_express(torch.randn(8, 8), 6)
    stack = micro_stack(enable=["polar_express"])
    pm = make_pm(stack)
    assert pm.hook.golf_orthogonalizer(ctx=make_ctx(stack, pm)) is polar_express
    too_many = micro_stack(enable=["polar_express"], overrides=["techniques.muon.backend_steps=7"])
    with pytest.raises(GolfError, match="backend_steps=7"):
        make_pm(too_many).hook.golf_configure(ctx=make_ctx(too_many))


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["polar_express"])
    assert report["steps"] == 3 and np.isfinite(report["val_bpb"])
