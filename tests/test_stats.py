"""95% confidence intervals over cycles."""

from __future__ import annotations

import pytest

from lem.coordinator.results.stats import ci95_half_width, t95


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
