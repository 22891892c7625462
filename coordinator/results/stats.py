"""Confidence intervals over cycles (Student's t), without SciPy; the sample standard
deviation, exactly ``statistics.stdev``'s but an order of magnitude faster."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(degrees_of_freedom: int) -> float:
    """The two-sided 95% t critical value (1.96 beyond 30 degrees of freedom)."""
    if degrees_of_freedom < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom")
    return _T95[degrees_of_freedom - 1] if degrees_of_freedom <= 30 else 1.96


def ci95_half_width(values: Sequence[float]) -> float | None:
    """Half-width of the 95% confidence interval of the mean (same unit as ``values``);
    None with fewer than 2 values."""
    if len(values) < 2:
        return None
    return t95(len(values) - 1) * sample_stdev(values) / math.sqrt(len(values))


def sample_stdev(values: Sequence[float]) -> float:
    """``statistics.stdev(values)``, the same float, for 2 or more finite floats or ints
    (anything else goes to ``statistics.stdev``): the sample variance as an exact fraction
    of integers, then its correctly rounded square root, as ``statistics`` computes them
    (without its ``Fraction`` objects and type dispatch)."""
    n = len(values)
    if n == 2:
        a, b = values
        if type(a) is float and type(b) is float and _FINITE[0] < a < _FINITE[1] > b > _FINITE[0]:
            return stdev_of_two(a, b)
    if n < 2 or not all(type(v) is float or type(v) is int for v in values):
        return statistics.stdev(values)
    try:
        ratios = [v.as_integer_ratio() for v in values]
    except (OverflowError, ValueError):  # inf, nan
        return statistics.stdev(values)
    scale = max(d for _, d in ratios)  # every denominator is a power of two
    scaled = [p * (scale // d) for p, d in ratios]
    total = sum(scaled)
    numerator = n * sum(x * x for x in scaled) - total * total
    denominator = n * (n - 1) * scale * scale
    common = math.gcd(numerator, denominator)
    return _float_sqrt_of_frac(numerator // common, denominator // common)


def stdev_of_two(a: float, b: float) -> float:
    """``statistics.stdev([a, b])`` of two finite floats, the common case, in short: the
    variance is (a - b)² / 2, over a power of two, and so is its fraction in lowest terms."""
    (p, q), (r, s) = a.as_integer_ratio(), b.as_integer_ratio()  # q, s: powers of two
    difference, scale = (p - r * (q // s), q) if q >= s else (p * (s // q) - r, s)
    if not difference:
        return 0.0
    # difference² / 2^j in lowest terms (j from 2·scale², less the 2s the square shares)
    twos = 2 * ((difference & -difference).bit_length() - 1)
    j = 2 * (scale.bit_length() - 1) + 1
    common = min(twos, j)
    n, j = (difference * difference) >> common, j - common
    # _float_sqrt_of_frac(n, 2^j), its divisions by a power of two as shifts
    q = (n.bit_length() - (j + 1) - _SQRT_BIT_WIDTH) // 2
    if q >= 0:
        shift = j + 2 * q
        root = math.isqrt(n >> shift)
        return ((root | ((root * root) << shift != n)) << q) / 1
    n <<= -2 * q
    root = math.isqrt(n >> j)
    return (root | ((root * root) << j != n)) / (1 << -q)


_FINITE = (-math.inf, math.inf)

# The correctly rounded square root of a fraction, as CPython's statistics module takes it
# (``_float_sqrt_of_frac``, ``_integer_sqrt_of_frac_rto``; https://bugs.python.org/msg407078).
_SQRT_BIT_WIDTH = 2 * 53 + 3


def _float_sqrt_of_frac(n: int, m: int) -> float:
    q = (n.bit_length() - m.bit_length() - _SQRT_BIT_WIDTH) // 2
    if q >= 0:
        return (_integer_sqrt_of_frac_rto(n, m << 2 * q) << q) / 1
    return _integer_sqrt_of_frac_rto(n << -2 * q, m) / (1 << -q)


def _integer_sqrt_of_frac_rto(n: int, m: int) -> int:
    a = math.isqrt(n // m)
    return a | (a * a * m != n)
