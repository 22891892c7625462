"""Counter-quantisation bounds, minimum windows, repetition counts and window verdicts."""

from __future__ import annotations

import pytest

from lem.workers.metering.window_policy import (
    WindowVerdict,
    judge_window,
    min_window_s_for,
    quantisation_bound_j,
    relative_bound,
    repetitions_needed,
)


def test_bound_is_one_period_at_each_edge() -> None:
    assert quantisation_bound_j(0.1, 300.0) == pytest.approx(60.0)
    assert quantisation_bound_j(0.1, 75.0) == pytest.approx(15.0)
    with pytest.raises(ValueError):
        quantisation_bound_j(-0.1, 75.0)


def test_relative_bound_is_none_for_unknown_or_non_positive_energy() -> None:
    assert relative_bound(15.0, 1500.0) == pytest.approx(0.01)
    assert relative_bound(15.0, None) is None
    assert relative_bound(15.0, 0.0) is None
    assert relative_bound(15.0, -3.0) is None
    assert relative_bound(None, 10.0) is None


def test_min_window_for_h100_period_and_half_percent_is_40_s() -> None:
    assert min_window_s_for(0.1) == pytest.approx(40.0)
    assert min_window_s_for(0.1, 0.005) == pytest.approx(40.0)
    assert min_window_s_for(0.1, 0.01) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        min_window_s_for(0.0)
    with pytest.raises(ValueError):
        min_window_s_for(0.1, 0.0)


@pytest.mark.parametrize("power_w", [75.0, 300.0, 700.0])
def test_min_window_meets_its_target_at_any_power(power_w: float) -> None:
    window_s = min_window_s_for(0.1, 0.005)
    rel = relative_bound(quantisation_bound_j(0.1, power_w), power_w * window_s)
    assert rel == pytest.approx(0.005)


def test_repetitions_fill_the_window() -> None:
    assert repetitions_needed(3.0, 40.0, 1) == 14  # 13 × 3 s = 39 s is short
    assert repetitions_needed(4.0, 40.0, 1) == 10  # exactly 40 s, no extra repetition
    assert repetitions_needed(0.3, 2.1, 1) == 7  # 2.1 / 0.3 is 7.000000000000001 in floats


def test_min_iterations_dominates_when_larger() -> None:
    assert repetitions_needed(3.0, 40.0, 20) == 20
    assert repetitions_needed(100.0, 40.0, 0) == 1
    assert repetitions_needed(100.0, 0.0, 0) == 1
    with pytest.raises(ValueError):
        repetitions_needed(0.0, 40.0, 1)


def test_long_window_has_no_flags() -> None:
    verdict = judge_window(energy_j=300.0 * 40.0, duration_s=40.0, counter_period_s=0.1)
    assert verdict.bound_j == pytest.approx(60.0)
    assert verdict.relative_bound == pytest.approx(0.005)
    assert verdict.flags == []


def test_short_window_flag_edges() -> None:
    # period 0.125 s and 100 W keep the arithmetic exact: relative bound = 0.25 / duration.
    at = judge_window(energy_j=100.0 * 25.0, duration_s=25.0, counter_period_s=0.125)
    assert at.relative_bound == 0.01
    assert "short_window" not in at.flags  # exactly at the threshold is not flagged
    below = judge_window(energy_j=100.0 * 24.0, duration_s=24.0, counter_period_s=0.125)
    assert below.relative_bound is not None and below.relative_bound > 0.01
    assert below.flags == ["short_window"]
    loose = judge_window(100.0 * 24.0, 24.0, 0.125, flag_threshold=0.02)
    assert loose.flags == []


def test_unknown_energy_and_period_are_flagged_with_no_bound() -> None:
    no_energy = judge_window(energy_j=None, duration_s=40.0, counter_period_s=0.1)
    assert no_energy == WindowVerdict(None, None, ["energy_unavailable"])
    no_period = judge_window(energy_j=1000.0, duration_s=1.0, counter_period_s=None)
    assert no_period == WindowVerdict(None, None, ["counter_period_unknown"])
    neither = judge_window(None, 1.0, None)
    assert neither.flags == ["energy_unavailable", "counter_period_unknown"]


def test_zero_energy_and_bad_duration_are_flagged() -> None:
    zero = judge_window(energy_j=0.0, duration_s=40.0, counter_period_s=0.1)
    assert zero.relative_bound is None
    assert zero.flags == ["energy_not_positive"]
    # a 10 s window's bound is 2% of its energy whatever it read, 0 J included
    short_zero = judge_window(energy_j=0.0, duration_s=10.0, counter_period_s=0.1)
    assert short_zero.flags == ["energy_not_positive", "short_window"]
    # with sampled power the bound of a 0 J reading is the power actually drawn
    sampled = judge_window(0.0, 0.05, 0.1, sampled_power_w=700.0)
    assert sampled.bound_j == 2 * 0.1 * 700.0
    bad = judge_window(energy_j=100.0, duration_s=0.0, counter_period_s=0.1)
    assert bad.bound_j is None
    assert bad.flags == ["invalid_duration"]
