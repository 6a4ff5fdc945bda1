"""Seed statistics against values worked by hand and from printed t tables (no scipy)."""

from __future__ import annotations

import math

import pytest

from golf_core.stats import betainc, bpb_to_nats, compare_seeds, mean, sample_std, t_sf, welch_t_test


def test_mean_and_bessel_corrected_std():
    assert mean([1.0, 2.0, 3.0, 4.0]) == 2.5
    # sum of squared deviations 5.0 over n - 1 = 3
    assert sample_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5.0 / 3.0))
    assert sample_std([7.0]) == 0.0


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (1.0, 1, 0.25),  # Cauchy: arctan(1)/pi from the median
        (2.0, 10, 0.036694017),  # t tables
        (2.228, 10, 0.025),  # the 97.5% quantile of t(10) is 2.228
        (12.706, 1, 0.025),
        (0.0, 5, 0.5),
    ],
)
def test_student_t_tail(t, df, p):
    assert t_sf(t, df) == pytest.approx(p, abs=2e-5)


def test_t_tail_matches_normal_for_large_df():
    # P(Z > 1.959964) = 0.025
    assert t_sf(1.959964, 1e7) == pytest.approx(0.025, abs=1e-6)


def test_betainc_closed_forms():
    # I_x(1, 1) = x ; I_x(a, 1) = x^a ; symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert betainc(3, 1, 0.5) == pytest.approx(0.125)
    assert betainc(2.5, 4.0, 0.2) == pytest.approx(1 - betainc(4.0, 2.5, 0.8))


def test_welch_hand_worked():
    base = [1.10, 1.11, 1.12]  # mean 1.11, s = 0.01
    variant = [1.080, 1.085, 1.090]  # mean 1.085, s = 0.005
    r = welch_t_test(base, variant)
    se = math.sqrt(0.01**2 / 3 + 0.005**2 / 3)
    assert r.t == pytest.approx(0.025 / se)
    v1, v2 = 0.01**2 / 3, 0.005**2 / 3
    assert r.df == pytest.approx((v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2))
    assert r.p_two_sided == pytest.approx(2 * r.p_one_sided)
    assert 0.01 < r.p_one_sided < 0.02


def test_record_rule_needs_both_size_and_significance():
    bytes_per_token = 2.4
    # 0.004 bpb * ln2 * 2.4 = 0.00665 nats, tight seeds: clears
    strong = compare_seeds([1.100, 1.1001, 1.0999], [1.096, 1.0961, 1.0959], bytes_per_token)
    assert strong.delta_nats == pytest.approx(bpb_to_nats(-0.004, bytes_per_token))
    assert strong.clears_record_rule
    # same means but noisy seeds: not significant
    noisy = compare_seeds([1.10, 1.08, 1.12], [1.096, 1.076, 1.116], bytes_per_token)
    assert not noisy.clears_record_rule
    # significant but too small (0.001 bpb = 0.0017 nats)
    small = compare_seeds([1.1, 1.10001, 1.09999], [1.099, 1.09901, 1.09899], bytes_per_token)
    assert small.p_value < 0.01 and not small.clears_record_rule


def test_welch_needs_two_seeds():
    with pytest.raises(ValueError):
        welch_t_test([1.0], [1.0, 2.0])
