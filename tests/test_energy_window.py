"""Energy windows from counter readings; NVML absent gives null plus a reason, never 0."""

from __future__ import annotations

import pytest

from lem.protocol.devices.nvml import EnergyCounters, inventory
from lem.workers.metering.energy import EnergyWindow


class ScriptedCounters:
    """Counter readings in mJ, one dict per read (stands in for NVML's counter)."""

    def __init__(self, readings: list[dict[str, int | str]]) -> None:
        self.readings = readings

    def read_mj(self) -> dict[str, int | str]:
        return self.readings.pop(0)


def test_energy_is_counter_difference_per_gpu_summed() -> None:
    counters = ScriptedCounters([{"A": 1_000, "B": 5_000}, {"A": 3_500, "B": 9_000}])
    window = EnergyWindow(counters, ["A", "B"], None)
    window.begin()
    window.end()
    result = window.result()
    assert [g.energy_j for g in result.per_gpu] == [2.5, 4.0]
    assert result.energy_j == pytest.approx(6.5)
    assert result.unavailable_reason is None
    assert all(g.method == "nvml_energy_counter" for g in result.per_gpu)


def test_one_unreadable_gpu_makes_the_total_null_with_its_reason() -> None:
    counters = ScriptedCounters([{"A": 1, "B": "not supported"}, {"A": 2, "B": "not supported"}])
    window = EnergyWindow(counters, ["A", "B"], None)
    window.begin()
    window.end()
    result = window.result()
    assert result.energy_j is None
    assert result.unavailable_reason == "not supported"
    assert result.per_gpu[0].energy_j == pytest.approx(0.001)


def test_counter_going_backwards_is_not_negative_energy() -> None:
    counters = ScriptedCounters([{"A": 10}, {"A": 5}])
    window = EnergyWindow(counters, ["A"], None)
    window.begin()
    window.end()
    assert window.result().energy_j is None
    assert "backwards" in (window.result().unavailable_reason or "")


def test_without_counters_everything_is_null_with_the_reason() -> None:
    window = EnergyWindow(None, [], "no GPU: ran on CPU")
    window.begin()
    window.end()
    result = window.result()
    assert result.energy_j is None and result.unavailable_reason == "no GPU: ran on CPU"
    assert result.window_duration_s is not None and result.window_duration_s >= 0
    with pytest.raises(ValueError):
        EnergyWindow(None, [], None)


def test_inventory_never_raises_and_explains_absence() -> None:
    inv = inventory()
    if inv.gpus:
        pytest.skip("this machine has GPUs; the absence path is for CPU-only machines")
    assert inv.unavailable_reason or inv.gpus == []


@pytest.mark.gpu
def test_real_counter_advances_on_a_gpu() -> None:
    inv = inventory()
    if not inv.gpus:
        pytest.skip(f"no NVIDIA GPU here: {inv.unavailable_reason}")
    counters = EnergyCounters([inv.gpus[0].uuid])
    try:
        first = counters.read_mj()[inv.gpus[0].uuid]
        assert isinstance(first, int) and first > 0
    finally:
        counters.close()
