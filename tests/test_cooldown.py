"""Cooldown before a measurement: fixed gap, bounded wait for a temperature threshold."""

from __future__ import annotations

from lem.protocol.config import CooldownConfig
from lem.workers.metering.cooldown import cool_down


class CoolingGpu:
    """Temperatures (°C) that fall 2 °C per second of fake time."""

    def __init__(self, start_c: int) -> None:
        self.start_c = start_c
        self.now_s = 0.0

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds

    def read_temperature_c(self, uuid: str) -> int | None:
        return int(self.start_c - 2 * self.now_s)


def test_waits_until_cool_enough() -> None:
    gpu = CoolingGpu(70)
    outcome = cool_down(CooldownConfig(max_temperature_c=60), gpu, ["A"], gpu.clock, gpu.sleep)
    assert outcome.reached and outcome.temperatures_c == {"A": 60}
    assert outcome.waited_s == 5.0


def test_gives_up_after_max_wait_and_says_so() -> None:
    gpu = CoolingGpu(90)
    config = CooldownConfig(max_temperature_c=40, max_wait_s=10)
    outcome = cool_down(config, gpu, ["A"], gpu.clock, gpu.sleep)
    assert not outcome.reached and outcome.waited_s <= 11.0
    assert outcome.temperatures_c["A"] is not None and outcome.temperatures_c["A"] > 40


def test_gap_only_and_unreadable_temperature() -> None:
    gpu = CoolingGpu(50)
    outcome = cool_down(CooldownConfig(gap_s=3.0), gpu, ["A"], gpu.clock, gpu.sleep)
    assert outcome.reached and outcome.waited_s == 3.0

    class Blind(CoolingGpu):
        def read_temperature_c(self, uuid: str) -> int | None:
            return None

    blind = Blind(0)
    config = CooldownConfig(max_temperature_c=60, max_wait_s=2)
    assert not cool_down(config, blind, ["A"], blind.clock, blind.sleep).reached
