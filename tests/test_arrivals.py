"""Seeded arrival schedules: reproducible, right mean, right distribution (KS at α = 0.01)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from lem.workers.workload.arrivals import (
    ArrivalPlan,
    ConcurrencyLimit,
    exponential_cdf,
    gamma_arrivals_s,
    gamma_cdf,
    gaps_s,
    ks_critical_value,
    ks_statistic,
    poisson_arrivals_s,
    regularised_lower_gamma,
)

N = 20_000
RATE_PER_S = 4.0


def test_schedules_are_seeded() -> None:
    assert poisson_arrivals_s(RATE_PER_S, 100, seed=1) == poisson_arrivals_s(RATE_PER_S, 100, 1)
    assert poisson_arrivals_s(RATE_PER_S, 100, 1) != poisson_arrivals_s(RATE_PER_S, 100, 2)
    assert gamma_arrivals_s(RATE_PER_S, 0.5, 100, 1) == gamma_arrivals_s(RATE_PER_S, 0.5, 100, 1)
    assert gamma_arrivals_s(RATE_PER_S, 0.5, 100, 1) != gamma_arrivals_s(RATE_PER_S, 0.5, 100, 2)


def test_schedule_shape() -> None:
    arrivals_s = poisson_arrivals_s(RATE_PER_S, 50, seed=3)
    assert len(arrivals_s) == 50
    assert arrivals_s[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(arrivals_s))
    assert len(gaps_s(arrivals_s)) == 49
    assert poisson_arrivals_s(RATE_PER_S, 0, seed=3) == []
    assert gamma_arrivals_s(RATE_PER_S, 2.0, 1, seed=3) == [0.0]


@pytest.mark.parametrize("burstiness", [None, 0.5, 1.0, 2.0])
def test_mean_gap_is_one_over_rate(burstiness: float | None) -> None:
    if burstiness is None:
        gaps = gaps_s(poisson_arrivals_s(RATE_PER_S, N + 1, seed=11))
        cv = 1.0
    else:
        gaps = gaps_s(gamma_arrivals_s(RATE_PER_S, burstiness, N + 1, seed=11))
        cv = 1 / math.sqrt(burstiness)
    # Five standard errors of the mean: a false failure has odds of about 1 in 3.5 million.
    tolerance = 5 * cv / math.sqrt(N)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / RATE_PER_S, rel=tolerance)
    assert np.std(gaps) * RATE_PER_S == pytest.approx(cv, rel=0.05)


def test_poisson_gaps_pass_ks_and_wrong_rate_fails() -> None:
    gaps = gaps_s(poisson_arrivals_s(RATE_PER_S, N + 1, seed=5))
    critical = ks_critical_value(len(gaps), alpha=0.01)
    assert ks_statistic(gaps, exponential_cdf(RATE_PER_S)) < critical
    assert ks_statistic(gaps, exponential_cdf(2 * RATE_PER_S)) > critical
    assert ks_statistic(gaps, exponential_cdf(1.1 * RATE_PER_S)) > critical


@pytest.mark.parametrize("burstiness", [0.5, 2.0])
def test_gamma_gaps_pass_ks_and_wrong_distribution_fails(burstiness: float) -> None:
    gaps = gaps_s(gamma_arrivals_s(RATE_PER_S, burstiness, N + 1, seed=7))
    critical = ks_critical_value(len(gaps), alpha=0.01)
    scale_s = 1 / (RATE_PER_S * burstiness)
    assert ks_statistic(gaps, gamma_cdf(burstiness, scale_s)) < critical
    # Wrong rate, and the right mean but a Poisson process's shape: both rejected.
    assert ks_statistic(gaps, gamma_cdf(burstiness, scale_s / 2)) > critical
    assert ks_statistic(gaps, exponential_cdf(RATE_PER_S)) > critical


def test_gamma_with_burstiness_one_is_exponential() -> None:
    cdf_gamma, cdf_exp = gamma_cdf(1.0, 0.25), exponential_cdf(4.0)
    for x_s in (0.0, 0.01, 0.1, 0.25, 1.0, 3.0):
        assert cdf_gamma(x_s) == pytest.approx(cdf_exp(x_s), rel=1e-12, abs=1e-15)


def _p_integer(n: int, x: float) -> float:
    # P(n, x) = 1 - e^-x Σ_{k<n} x^k / k!  for whole n
    return 1 - math.fsum(math.exp(k * math.log(x) - x - math.lgamma(k + 1)) for k in range(n))


def _p_half_integer(a: float, x: float) -> float:
    # P(1/2, x) = erf(√x); P(a + 1, x) = P(a, x) - x^a e^-x / Γ(a + 1)
    p, s = math.erf(math.sqrt(x)), 0.5
    while s < a:
        p -= math.exp(s * math.log(x) - x - math.lgamma(s + 1))
        s += 1
    return p


@pytest.mark.parametrize("x", [1e-6, 0.01, 0.3, 1.0, 2.5, 7.0, 15.0, 40.0, 120.0])
@pytest.mark.parametrize("shape", [1, 2, 5, 20, 50])
def test_regularised_gamma_whole_shapes(shape: int, x: float) -> None:
    assert regularised_lower_gamma(shape, x) == pytest.approx(_p_integer(shape, x), abs=1e-12)


@pytest.mark.parametrize("x", [1e-6, 0.01, 0.3, 1.0, 2.5, 7.0, 15.0, 40.0])
@pytest.mark.parametrize("shape", [0.5, 1.5, 2.5, 10.5])
def test_regularised_gamma_half_shapes(shape: float, x: float) -> None:
    expected = _p_half_integer(shape, x)
    assert regularised_lower_gamma(shape, x) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("shape", [0.3, 0.5, 2.0, 3.7])
def test_gamma_cdf_fits_numpy_gamma_samples(shape: float) -> None:
    samples = np.random.default_rng(2024).gamma(shape, 0.8, size=N)
    cdf = gamma_cdf(shape, 0.8)
    assert ks_statistic(samples.tolist(), cdf) < ks_critical_value(N)
    # The empirical CDF at a few points agrees within a few standard errors.
    for x in (0.1, 0.5, 1.0, 3.0):
        p = cdf(x)
        se = math.sqrt(p * (1 - p) / N)
        assert float(np.mean(samples <= x)) == pytest.approx(p, abs=5 * se + 1e-9)


def test_ks_statistic_and_critical_value() -> None:
    def uniform(x: float) -> float:
        return min(max(x, 0.0), 1.0)

    assert ks_statistic([0.5], uniform) == pytest.approx(0.5)
    assert ks_statistic([0.25, 0.75], uniform) == pytest.approx(0.25)
    assert ks_statistic([0.9, 0.95, 0.99], uniform) == pytest.approx(0.9)
    assert ks_critical_value(100, alpha=0.05) == pytest.approx(0.1358, rel=1e-3)
    assert ks_critical_value(100) == pytest.approx(0.1628, rel=1e-3)
    with pytest.raises(ValueError):
        ks_statistic([], uniform)
    with pytest.raises(ValueError):
        ks_critical_value(0)
    with pytest.raises(ValueError):
        ks_critical_value(10, alpha=1.5)


def test_concurrency_limit_is_a_plan() -> None:
    plans: list[ArrivalPlan] = [ConcurrencyLimit(8), poisson_arrivals_s(1.0, 3, seed=0)]
    assert isinstance(plans[0], ConcurrencyLimit)
    assert plans[0].concurrency == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        plans[0].concurrency = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="concurrency"):
        ConcurrencyLimit(0)


@pytest.mark.parametrize("rate_per_s", [0.0, -1.0, math.nan, math.inf])
def test_bad_rate_raises(rate_per_s: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        poisson_arrivals_s(rate_per_s, 10, seed=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        gamma_arrivals_s(rate_per_s, 1.0, 10, seed=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        exponential_cdf(rate_per_s)


def test_other_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="count"):
        poisson_arrivals_s(1.0, -1, seed=0)
    with pytest.raises(ValueError, match="count"):
        gamma_arrivals_s(1.0, 1.0, -1, seed=0)
    for burstiness in (0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match="burstiness"):
            gamma_arrivals_s(1.0, burstiness, 10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        gamma_cdf(0.0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        gamma_cdf(1.0, -1.0)
