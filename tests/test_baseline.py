"""Idle baseline from scripted power readings on a fake clock, and net energy from it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from lem.workers.metering.baseline import (
    IdleBaseline,
    baseline_age_s,
    measure_idle_baseline,
    needs_remeasure,
    net_energy_clamped,
    net_energy_j,
)


class FakeTime:
    """A monotonic clock in seconds that only ``sleep`` advances."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now_s += seconds


class ScriptedPower:
    """Power readings in watts, one per call, from a (possibly endless) iterable."""

    def __init__(self, readings_w: Iterable[float | None]) -> None:
        self._it: Iterator[float | None] = iter(readings_w)
        self.reads = 0

    def __call__(self) -> float | None:
        self.reads += 1
        return next(self._it)


def _measure(power: ScriptedPower, fake: FakeTime, **kwargs: Any) -> IdleBaseline:
    return measure_idle_baseline(
        power, fake.clock, fake.sleep, wall_clock=lambda: 1_700_000_000.0, **kwargs
    )


def test_accepts_once_noise_settles_and_reports_the_stable_level() -> None:
    noisy_w = [140.0, 60.0, 120.0, 90.0, 150.0, 70.0] * 10  # 6 s of a GPU still settling
    stable_w = itertools.cycle([75.0, 75.5, 74.5])  # then idle at 75 W, CV ~0.5%
    power = ScriptedPower(itertools.chain(noisy_w, stable_w))
    fake = FakeTime()
    base = _measure(power, fake)
    assert base.accepted is True
    assert base.reason is None
    assert base.power_w == pytest.approx(75.0, abs=0.2)
    assert base.cv is not None and base.cv <= 0.02
    assert base.samples == 50  # 5 s at 0.1 s
    assert base.window_duration_s == pytest.approx(4.9)
    assert power.reads > len(noisy_w)  # it did wait for the noise to leave the window
    assert base.duration_s == pytest.approx(fake.now_s - 1000.0)
    assert base.method == "nvml_power_samples"
    assert base.measured_at_unix_s == 1_700_000_000.0


def test_steady_from_the_start_accepts_after_one_window() -> None:
    power = ScriptedPower(itertools.repeat(75.0))
    fake = FakeTime()
    base = _measure(power, fake)
    assert base.accepted is True
    assert base.power_w == pytest.approx(75.0)
    assert power.reads == 50
    assert fake.sleeps == 49


def test_never_stable_gives_up_with_reason_and_bounded_wait() -> None:
    # Steadiest stretch: readings 100..199 swing less than the rest.
    swings_w = [60.0, 140.0] * 50 + [70.0, 80.0] * 50 + [50.0, 150.0] * 1000
    power = ScriptedPower(swings_w)
    fake = FakeTime()
    base = _measure(power, fake, max_wait_s=20.0)
    assert base.accepted is False
    assert base.reason is not None and "unstable" in base.reason
    assert fake.now_s - 1000.0 <= 20.0 + 0.1 + 1e-9
    assert base.duration_s >= 20.0
    # The lowest-CV window is the 70/80 W stretch, and its mean comes back anyway.
    assert base.power_w == pytest.approx(75.0)
    assert base.cv is not None and base.cv > 0.02


def test_none_reading_gives_no_baseline_and_a_reason() -> None:
    power = ScriptedPower([75.0, 75.0, None, 75.0])
    fake = FakeTime()
    base = _measure(power, fake)
    assert base.power_w is None
    assert base.accepted is False
    assert base.reason is not None and "unavailable" in base.reason
    assert base.samples == 2
    assert power.reads == 3


def test_window_longer_than_max_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        _measure(ScriptedPower([75.0]), FakeTime(), window_s=10.0, max_wait_s=5.0)


def test_net_energy_subtracts_idle() -> None:
    assert net_energy_j(1000.0, 75.0, 10.0) == (pytest.approx(250.0), None)
    assert net_energy_clamped(1000.0, 75.0, 10.0) is False


def test_net_energy_clamps_at_zero_and_says_so() -> None:
    net_j, note = net_energy_j(700.0, 80.0, 10.0)
    assert net_j == 0.0
    assert note is not None and note.startswith("clamped to 0")
    assert net_energy_clamped(700.0, 80.0, 10.0) is True


def test_net_energy_unknown_inputs_give_none_and_reason() -> None:
    assert net_energy_j(None, 75.0, 10.0) == (None, "gross energy unavailable")
    assert net_energy_j(1000.0, None, 10.0) == (None, "idle baseline unavailable")
    assert net_energy_j(1000.0, 75.0, -1.0)[0] is None
    assert net_energy_clamped(None, 75.0, 10.0) is False


def _baseline(accepted: bool = True, power_w: float | None = 75.0) -> IdleBaseline:
    return IdleBaseline(
        power_w=power_w,
        cv=0.005,
        samples=50,
        window_duration_s=4.9,
        duration_s=4.9,
        measured_at_unix_s=1000.0,
        method="nvml_power_samples",
        accepted=accepted,
        reason=None if accepted else "unstable",
    )


def test_age_and_remeasure() -> None:
    base = _baseline()
    assert baseline_age_s(base, 1600.0) == 600.0
    assert needs_remeasure(base, 1600.0, max_age_s=600.0) is False  # exactly at the limit
    assert needs_remeasure(base, 1600.5, max_age_s=600.0) is True
    assert needs_remeasure(base, 999.0, max_age_s=600.0) is True  # from the future
    assert needs_remeasure(None, 1000.0, max_age_s=600.0) is True
    assert needs_remeasure(_baseline(accepted=False), 1000.0, max_age_s=600.0) is True
    assert needs_remeasure(_baseline(power_w=None), 1000.0, max_age_s=600.0) is True
