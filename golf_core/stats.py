"""Seed statistics for the challenge's record rule, without scipy.

A new record must beat the previous one by at least 0.005 nats per token at p < 0.01 over its
seeds. Runs report bits per byte, so differences are converted with the validation set's bytes
per token: ``nats/token = bpb * ln 2 * bytes/token``.

Welch's t-test (unequal variances) gives the p-value; the Student t CDF is computed from the
regularized incomplete beta function (Lentz's continued fraction), accurate to ~1e-12, which the
tests check against hand-worked values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RECORD_MIN_NATS = 0.005
RECORD_MAX_P = 0.01


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def sample_std(xs: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (n - 1); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """One-sided survival function P(T > t) of Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class WelchResult:
    t: float
    df: float
    p_two_sided: float
    p_one_sided: float  # P(variant is not lower than base), i.e. for "variant improves"


def welch_t_test(base: Sequence[float], variant: Sequence[float]) -> WelchResult:
    """Welch's t-test of ``mean(variant) < mean(base)`` (lower bpb is better)."""
    n1, n2 = len(base), len(variant)
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's t-test needs at least two seeds per side")
    v1, v2 = sample_std(base) ** 2 / n1, sample_std(variant) ** 2 / n2
    diff = mean(base) - mean(variant)  # positive when the variant is better
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        p_one = 0.0 if diff > 0 else 1.0
        return WelchResult(math.copysign(math.inf, diff) if diff else 0.0, float(n1 + n2 - 2), 0.0 if diff else 1.0, p_one)
    t = diff / se
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    p_one = t_sf(t, df)
    return WelchResult(t, df, min(1.0, 2.0 * t_sf(abs(t), df)), p_one)


def bpb_to_nats(bpb: float, bytes_per_token: float) -> float:
    """Bits per byte -> nats per token on a validation set with ``bytes_per_token``."""
    return bpb * math.log(2.0) * bytes_per_token


@dataclass(frozen=True)
class Comparison:
    base_mean: float
    base_std: float
    variant_mean: float
    variant_std: float
    delta_bpb: float  # variant - base (negative = better)
    delta_nats: float
    p_value: float  # one-sided, for "variant is better"
    clears_record_rule: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def compare_seeds(base_bpb: Sequence[float], variant_bpb: Sequence[float], bytes_per_token: float) -> Comparison:
    delta = mean(variant_bpb) - mean(base_bpb)
    delta_nats = bpb_to_nats(delta, bytes_per_token)
    p = welch_t_test(base_bpb, variant_bpb).p_one_sided if min(len(base_bpb), len(variant_bpb)) >= 2 else float("nan")
    clears = (-delta_nats) >= RECORD_MIN_NATS and p < RECORD_MAX_P
    return Comparison(mean(base_bpb), sample_std(base_bpb), mean(variant_bpb), sample_std(variant_bpb), delta, delta_nats, p, clears)
