"""Before a measurement: a fixed gap, then waiting until the GPUs are cool enough.

Warm silicon leaks more power, so back-to-back cycles can drift in energy. A bounded wait
for a temperature threshold makes cycles start from comparable thermal states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lem.protocol.config import CooldownConfig


class ThermalReader(Protocol):
    def read_temperature_c(self, uuid: str) -> int | None: ...


@dataclass(frozen=True)
class CooldownOutcome:
    """Seconds spent, the temperatures (°C) at the end, and whether the threshold was met."""

    waited_s: float
    temperatures_c: dict[str, int | None]
    reached: bool


def cool_down(
    config: CooldownConfig,
    thermal: ThermalReader | None,
    gpu_uuids: list[str],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    check_interval_s: float = 1.0,
) -> CooldownOutcome:
    """Pause ``gap_s``, then wait (bounded) until every GPU is ≤ ``max_temperature_c``."""
    started_s = clock()
    if config.gap_s > 0:
        sleep(config.gap_s)

    def temperatures() -> dict[str, int | None]:
        return {u: thermal.read_temperature_c(u) for u in gpu_uuids} if thermal else {}

    current = temperatures()
    threshold = config.max_temperature_c
    if threshold is None or not gpu_uuids:
        return CooldownOutcome(clock() - started_s, current, True)
    deadline_s = clock() + config.max_wait_s
    while not all(t is not None and t <= threshold for t in current.values()):
        if clock() >= deadline_s:
            return CooldownOutcome(clock() - started_s, current, False)
        sleep(check_interval_s)
        current = temperatures()
    return CooldownOutcome(clock() - started_s, current, True)
