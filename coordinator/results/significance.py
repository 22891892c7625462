"""Welch's t-test without SciPy: Student's t CDF via the regularized incomplete beta
function (continued fraction, as in Numerical Recipes' ``betacf``) and the
Welch–Satterthwaite degrees of freedom.

Values are per-cycle figures of one metric (any unit, the same for both samples); the
statistic and p-value are unitless.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 3e-16
_TINY = 1e-300
_MAX_ITERATIONS = 500


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz); converges for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete beta needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta needs 0 <= x <= 1, got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (real, not only whole)."""
    if df <= 0:
        raise ValueError(f"Student's t needs df > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return min(1.0, regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(b) − mean(a).

    ``t``: the statistic (unitless; positive when b's mean is larger). ``df``: the
    Welch–Satterthwaite degrees of freedom (None when both samples have zero variance).
    ``p``: two-sided p-value.
    """

    t: float
    df: float | None
    p: float


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's t-test of two samples of one metric; each needs at least 2 values.

    With zero variance in both samples the means either agree (p = 1) or differ without
    any noise (t infinite, p = 0).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs >= 2 values a side, got {len(a)} and {len(b)}")
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    se2_a = statistics.variance(a) / len(a)  # squared standard error of each mean
    se2_b = statistics.variance(b) / len(b)
    se2 = se2_a + se2_b
    diff = mean_b - mean_a
    if se2 == 0.0:
        if diff == 0.0:
            return WelchResult(t=0.0, df=None, p=1.0)
        return WelchResult(t=math.copysign(math.inf, diff), df=None, p=0.0)
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (se2_a * se2_a / (len(a) - 1) + se2_b * se2_b / (len(b) - 1))
    return WelchResult(t=t, df=df, p=two_sided_p(t, df))
