"""Seeded request arrival schedules for server-style load, and the tests that check them.

A schedule is a list of arrival times in seconds from the start of the run: the first
request arrives at 0.0 and each later one a random gap after the one before (as vLLM's
``benchmark_serving`` sends its first request at once, then sleeps a gap between
requests). ``count`` arrivals thus hold ``count - 1`` gaps. Gaps come from
``random.Random(seed)``, whose Mersenne Twister and ``expovariate``/``gammavariate`` give
the same numbers on every platform for a given Python, so a seed names one schedule.

Fixed concurrency (N requests in flight, the next sent when one finishes) is no schedule:
``ConcurrencyLimit`` marks it, and ``ArrivalPlan`` is either kind of plan.

The Kolmogorov–Smirnov helpers and CDFs (stdlib ``math`` only, no scipy) let tests and
sanity checks confirm that the gaps follow the distribution they claim.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from lem.workers.engines.base import BackendError

if TYPE_CHECKING:
    from lem.protocol.workload import WorkloadConfig


@dataclass(frozen=True)
class ConcurrencyLimit:
    """Closed-loop load: keep ``concurrency`` requests in flight, no arrival times."""

    concurrency: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


ArrivalPlan: TypeAlias = list[float] | ConcurrencyLimit
"""Arrival times in seconds from the run's start (open loop), or a concurrency limit."""


def _check(rate_per_s: float, count: int) -> None:
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")


def _stream_s(gap_s: Callable[[], float]) -> Iterator[float]:
    t_s = 0.0
    while True:
        yield t_s
        t_s += gap_s()


def _cumulate_s(gap_s: Callable[[], float], count: int) -> list[float]:
    return list(itertools.islice(_stream_s(gap_s), count))


def arrival_stream_s(
    arrival: str, rate_per_s: float, burstiness: float | None, seed: int
) -> Iterator[float]:
    """Endless arrival times (s) of a ``poisson`` or ``gamma`` process; its first ``count``
    times are exactly ``poisson_arrivals_s`` / ``gamma_arrivals_s`` of ``count``.

    Raises ValueError for another arrival name or an impossible rate or burstiness.
    """
    _check(rate_per_s, 0)
    rng = random.Random(seed)
    if arrival == "poisson":
        return _stream_s(lambda: rng.expovariate(rate_per_s))
    if arrival == "gamma":
        if burstiness is None or not (burstiness > 0 and math.isfinite(burstiness)):
            raise ValueError(f"burstiness must be a finite number > 0, got {burstiness}")
        scale_s = 1.0 / (rate_per_s * burstiness)
        shape = burstiness
        return _stream_s(lambda: rng.gammavariate(shape, scale_s))
    raise ValueError(f"no arrival times for arrival {arrival!r}")


def poisson_arrivals_s(rate_per_s: float, count: int, seed: int) -> list[float]:
    """``count`` arrival times (s) of a Poisson process: exponential gaps, mean 1/rate s.

    The first arrival is at 0.0 s (see the module docstring).
    """
    _check(rate_per_s, count)
    rng = random.Random(seed)
    return _cumulate_s(lambda: rng.expovariate(rate_per_s), count)


def gamma_arrivals_s(rate_per_s: float, burstiness: float, count: int, seed: int) -> list[float]:
    """``count`` arrival times (s) with gamma gaps of shape ``burstiness``, mean 1/rate s.

    As vLLM's benchmark: scale = 1 / (rate_per_s * burstiness). Burstiness 1 is a Poisson
    process, below 1 burstier (gap coefficient of variation 1/sqrt(burstiness) > 1), above 1
    more regular. The first arrival is at 0.0 s.
    """
    _check(rate_per_s, count)
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ValueError(f"burstiness must be a finite number > 0, got {burstiness}")
    rng = random.Random(seed)
    scale_s = 1.0 / (rate_per_s * burstiness)
    return _cumulate_s(lambda: rng.gammavariate(burstiness, scale_s), count)


def gaps_s(arrivals_s: Sequence[float]) -> list[float]:
    """Gaps (s) between consecutive arrival times (s): one fewer than the arrivals."""
    return [b - a for a, b in itertools.pairwise(arrivals_s)]


def ks_statistic(samples: Sequence[float], cdf: Callable[[float], float]) -> float:
    """One-sample Kolmogorov–Smirnov D: the largest gap between the empirical CDF and ``cdf``."""
    if not samples:
        raise ValueError("ks_statistic needs at least one sample")
    ordered = sorted(samples)
    n = len(ordered)
    d = 0.0
    for i, x in enumerate(ordered):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def ks_critical_value(n: int, alpha: float = 0.01) -> float:
    """Asymptotic KS critical value c(α)/√n, with c(α) = sqrt(-ln(α/2) / 2).

    That gives c(0.05) = 1.358 and c(0.01) = 1.628. It is the large-n limit of the
    Kolmogorov distribution: good to about 1 % from n ≈ 50 on; for small n the exact
    critical value is somewhat larger, so the test rejects a little too often there.
    Reject the hypothesis that samples follow the CDF when D > this value.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)


def exponential_cdf(rate_per_s: float) -> Callable[[float], float]:
    """CDF of an exponential gap (argument in s) with the given rate: 1 - exp(-rate·x)."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s}")

    def cdf(x_s: float) -> float:
        return 0.0 if x_s <= 0 else -math.expm1(-rate_per_s * x_s)

    return cdf


_EPS = 1e-15
_MAX_ITER = 10_000
_TINY = 1e-300


def regularised_lower_gamma(shape: float, x: float) -> float:
    """P(shape, x) = γ(shape, x) / Γ(shape), the regularised lower incomplete gamma function.

    Series for x < shape + 1, Lentz's continued fraction for Q = 1 - P otherwise
    (Numerical Recipes §6.2); relative accuracy about 1e-14.
    """
    if not shape > 0:
        raise ValueError(f"shape must be > 0, got {shape}")
    if x <= 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    log_prefactor = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1:
        term = total = 1.0 / shape
        a = shape
        for _ in range(_MAX_ITER):
            a += 1
            term *= x / a
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, total * math.exp(log_prefactor))
    b = x + 1 - shape
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - shape)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return max(0.0, 1.0 - math.exp(log_prefactor) * h)


def gamma_cdf(shape: float, scale: float) -> Callable[[float], float]:
    """CDF of a gamma distribution with ``shape`` and ``scale`` (scale in the argument's unit)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if not (shape > 0 and math.isfinite(shape)):
        raise ValueError(f"shape must be a finite number > 0, got {shape}")

    def cdf(x: float) -> float:
        return regularised_lower_gamma(shape, x / scale)

    return cdf


def arrival_plan(workload: WorkloadConfig) -> Iterator[float] | ConcurrencyLimit:
    """Server mode's feeding plan of ``workload``: the arrival times (an endless iterator,
    s from the window's start) or the concurrency limit. BackendError without an arrival
    process and its rate (the config checks refuse that first)."""
    if workload.arrival == "concurrency":
        return ConcurrencyLimit(workload.concurrency or 1)
    if workload.arrival is None or workload.rate_per_s is None:
        raise BackendError("server mode needs workload.arrival and its rate")
    return arrival_stream_s(
        workload.arrival, workload.rate_per_s, workload.burstiness, workload.seed or 0
    )
