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

import msgspec

_EPS = 3e-16
_TINY = 1e-300
_MAX_ITERATIONS = 500
_NORMAL_SQUARE = 2.0**-1000  # well above the subnormals (below 2**-1022)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz); converges for x < (a+1)/(a+b+2).
    Each iteration takes the even then the odd step (written out: this runs per test)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        numerator = m * (b - m) * x / ((qam + m2) * (a + m2))  # even step
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + numerator / c
        c = c if abs(c) > _TINY else _TINY
        h *= c * d
        numerator = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # odd step
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


def sample_variance(values: Sequence[float]) -> float:
    """The sample variance (n − 1 in the denominator) of at least 2 floats, in the values'
    unit squared: exactly ``statistics.variance``'s result (the exact value, rounded once),
    computed on integers, several times faster. Non-finite values go to ``statistics``."""
    if len(values) == 2 and math.isfinite(values[0]) and math.isfinite(values[1]):
        return _variance_of_two(values[0], values[1])
    if len(values) < 2 or not all(map(math.isfinite, values)):
        return statistics.variance(values)
    first = values[0]
    if all(v == first for v in values):
        return 0.0
    ratios = [x.as_integer_ratio() for x in values]
    # Each finite float is p / q with q a power of two: on the largest q they are integers.
    scale = max(q for _, q in ratios)
    ints = [p * (scale // q) for p, q in ratios]
    n, total = len(ints), sum(ints)
    # Σ(x − mean)² / (n − 1) = (n Σx² − (Σx)²) / (n (n − 1)); int / int rounds correctly.
    return (n * sum(v * v for v in ints) - total * total) / (n * (n - 1) * scale * scale)


def _variance_of_two(x: float, y: float) -> float:
    """``sample_variance([x, y])`` of finite x, y: (x − y)² / 2, exact, rounded once."""
    if x == y:
        return 0.0
    if y > 0.0 and y * 0.5 <= x <= y * 2.0:  # x − y is exact here (Sterbenz's lemma),
        square = (x - y) * (x - y)  # its square rounded once,
        if _NORMAL_SQUARE <= square < math.inf:  # and halving a normal float is exact
            return square / 2
    # Else on integers: x = P / scale, y = R / scale; the numerator is (P − R)².
    p, q = x.as_integer_ratio()
    r, s = y.as_integer_ratio()
    scale = max(q, s)
    d = p * (scale // q) - r * (scale // s)
    return d * d / (2 * scale * scale)


class WelchResult(msgspec.Struct, frozen=True):
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
    return welch_from_means(a, b, statistics.fmean(a), statistics.fmean(b))


def welch_from_means(
    a: Sequence[float], b: Sequence[float], mean_a: float, mean_b: float
) -> WelchResult:
    """``welch_t_test`` given the samples' means (``statistics.fmean``, as the caller has
    them already); each sample needs at least 2 values."""
    se2_a = sample_variance(a) / len(a)  # squared standard error of each mean
    se2_b = sample_variance(b) / len(b)
    se2 = se2_a + se2_b
    diff = mean_b - mean_a
    if se2 == 0.0:
        if diff == 0.0:
            return WelchResult(t=0.0, df=None, p=1.0)
        return WelchResult(t=math.copysign(math.inf, diff), df=None, p=0.0)
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (se2_a * se2_a / (len(a) - 1) + se2_b * se2_b / (len(b) - 1))
    return WelchResult(t=t, df=df, p=two_sided_p(t, df))
