"""Confidence intervals over cycles (Student's t), without SciPy."""

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
    return t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
