"""Inferring the energy counter's update period from back-to-back reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lem.protocol.devices.counter_period import detect_update_period, period_from_samples


def stepped_counter(
    period_s: float, read_cost_s: float, mj_per_update: int = 7500
) -> tuple[Callable[[], float], Callable[[], int]]:
    """A counter that advances every ``period_s`` on a fake clock that each read advances."""
    state = {"t": 0.0}

    def clock() -> float:
        return state["t"]

    def read() -> int:
        state["t"] += read_cost_s
        return int(state["t"] // period_s) * mj_per_update

    return clock, read


def test_period_of_a_100_ms_counter_read_every_4_ms() -> None:
    clock, read = stepped_counter(0.100, 0.004)
    found = detect_update_period(read, duration_s=1.0, clock=clock)
    assert found.period_s == pytest.approx(0.100, abs=0.005)
    assert found.changes_seen >= 9 and found.reason is None


def test_period_of_a_fast_counter() -> None:
    clock, read = stepped_counter(0.020, 0.001)
    assert detect_update_period(read, duration_s=0.5, clock=clock).period_s == pytest.approx(
        0.020, abs=0.002
    )


def test_a_frozen_counter_has_no_period() -> None:
    samples = [(i * 0.004, 1000) for i in range(250)]
    found = period_from_samples(samples)
    assert found.period_s is None
    assert "changed 0 time(s)" in (found.reason or "")


def test_an_unreadable_counter_reports_why() -> None:
    found = detect_update_period(lambda: "Not Supported", duration_s=0.1)
    assert found.period_s is None and found.reason == "Not Supported"


def test_irregular_updates_take_the_median() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.55, 0.65, 0.75]
    samples = []
    value = 0
    t = 0.0
    while t < 0.8:
        if times and t >= times[0]:
            value += 1
            times.pop(0)
        samples.append((t, value))
        t += 0.005
    assert period_from_samples(samples).period_s == pytest.approx(0.1, abs=0.01)


def test_several_gpus_in_one_pass_and_the_slowest_wins() -> None:
    from lem.protocol.devices.counter_period import detect_update_periods, slowest_period_s

    state = {"t": 0.0}

    def clock() -> float:
        return state["t"]

    def read_all() -> dict[str, int | str]:
        state["t"] += 0.002
        return {"A": int(state["t"] // 0.1), "B": int(state["t"] // 0.05)}

    periods = detect_update_periods(read_all, duration_s=1.0, clock=clock)
    assert periods["A"].period_s == pytest.approx(0.1, abs=0.005)
    assert periods["B"].period_s == pytest.approx(0.05, abs=0.005)
    assert slowest_period_s(periods) == (pytest.approx(0.1, abs=0.005), None)
    broken = detect_update_periods(lambda: {"A": 1, "C": "Not Supported"}, duration_s=0.01)
    period, reason = slowest_period_s(broken)
    assert period is None and "C: Not Supported" in (reason or "")
