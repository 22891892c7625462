"""95% confidence intervals over cycles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lem.coordinator.results.stats import ci95_half_width, sample_stdev, stdev_of_two, t95


def test_t_values() -> None:
    assert t95(1) == pytest.approx(12.706)
    assert t95(4) == pytest.approx(2.776)
    assert t95(100) == pytest.approx(1.96)
    with pytest.raises(ValueError):
        t95(0)


def test_half_width_of_known_samples() -> None:
    # mean 10, sample stdev 1 over 5 values: 2.776 * 1 / sqrt(5)
    values = [9.0, 9.5, 10.0, 10.5, 11.0]
    expected = 2.776 * (0.625**0.5) / 5**0.5
    assert ci95_half_width(values) == pytest.approx(expected, rel=1e-3)
    assert ci95_half_width([1.0]) is None
    assert ci95_half_width([2.0, 2.0]) == 0.0


def outcome(read: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("value", read())
    except Exception as exc:
        return ("error", type(exc))


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.floats() | st.integers(-(10**6), 10**6), min_size=2, max_size=6)
    | st.lists(st.floats(1e-3, 1e-2), min_size=2, max_size=2)
)
def test_sample_stdev_is_statistics_stdev_to_the_last_bit(values: list[float]) -> None:
    want, got = outcome(lambda: statistics.stdev(values)), outcome(lambda: sample_stdev(values))
    assert got == want or (got[1] != got[1] and want[1] != want[1])  # nan is nan


@pytest.mark.parametrize(
    "values",
    [[0.1, 0.2], [5e-324, 1e308], [-0.0, 0.0], [3.0, 3.0], [1, 2.5], [2.0, 4.0, 9.0], [7, 7]],
)
def test_sample_stdev_of_edge_samples(values: list[float]) -> None:
    assert sample_stdev(values) == statistics.stdev(values)


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False) | st.just(0.0) | st.just(5e-324),
)
def test_stdev_of_two_is_statistics_stdev_to_the_last_bit(a: float, b: float) -> None:
    assert outcome(lambda: stdev_of_two(a, b)) == outcome(lambda: statistics.stdev([a, b]))
    near = a * 1.0000001
    if math.isfinite(near):
        assert stdev_of_two(a, near) == statistics.stdev([a, near])
