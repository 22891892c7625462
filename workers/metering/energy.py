"""Energy over one measured window, per GPU UUID, from NVML's total-energy counter.

The backend calls ``begin``/``end`` right after a device synchronisation; this class
reads each GPU's counter there and nowhere else. Energy is gross (idle draw included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lem.protocol.results import GpuEnergy


class CounterReader(Protocol):
    """Cumulative energy counters in mJ per GPU UUID, or the reason one cannot be read."""

    def read_mj(self) -> dict[str, int | str]: ...


@dataclass(frozen=True)
class WindowEnergy:
    """Energy of a window: per GPU, the total in joules (None + reason if unknown)."""

    per_gpu: list[GpuEnergy]
    energy_j: float | None
    unavailable_reason: str | None
    window_duration_s: float | None


class EnergyWindow:
    """A ``MeasurementWindow`` that reads energy counters at its two edges.

    ``counters`` is None when energy cannot be measured at all; ``unavailable_reason``
    then says why (no NVML, CPU run, …) and every figure comes out as None.
    """

    def __init__(
        self,
        counters: CounterReader | None,
        gpu_uuids: list[str],
        unavailable_reason: str | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if counters is None and unavailable_reason is None:
            raise ValueError("an EnergyWindow without counters needs a reason")
        self._counters = counters
        self._gpu_uuids = gpu_uuids
        self._reason = unavailable_reason
        self._clock = clock
        self._begin: dict[str, int | str] | None = None
        self._end: dict[str, int | str] | None = None
        self._t_begin_s: float | None = None
        self._t_end_s: float | None = None

    def begin(self) -> None:
        if self._counters is not None:
            self._begin = self._counters.read_mj()
        self._t_begin_s = self._clock()

    def end(self) -> None:
        self._t_end_s = self._clock()
        if self._counters is not None:
            self._end = self._counters.read_mj()

    def result(self) -> WindowEnergy:
        duration_s = None
        if self._t_begin_s is not None and self._t_end_s is not None:
            duration_s = self._t_end_s - self._t_begin_s
        if self._counters is None or self._begin is None or self._end is None:
            reason = self._reason or "the measured window never began or never ended"
            per_gpu = [
                GpuEnergy(
                    gpu_uuid=u, energy_j=None, method="unavailable", unavailable_reason=reason
                )
                for u in self._gpu_uuids
            ]
            return WindowEnergy(per_gpu, None, reason, duration_s)
        per_gpu = [self._gpu_energy(uuid) for uuid in self._gpu_uuids]
        reasons = [g.unavailable_reason for g in per_gpu if g.energy_j is None]
        if reasons:
            return WindowEnergy(per_gpu, None, "; ".join(r for r in reasons if r), duration_s)
        total_j = sum(g.energy_j for g in per_gpu if g.energy_j is not None)
        return WindowEnergy(per_gpu, total_j, None, duration_s)

    def _gpu_energy(self, uuid: str) -> GpuEnergy:
        assert self._begin is not None and self._end is not None
        start, stop = self._begin[uuid], self._end[uuid]
        if isinstance(start, str) or isinstance(stop, str):
            reason = start if isinstance(start, str) else str(stop)
            return GpuEnergy(
                gpu_uuid=uuid, energy_j=None, method="unavailable", unavailable_reason=reason
            )
        if stop < start:
            return GpuEnergy(
                gpu_uuid=uuid,
                energy_j=None,
                method="unavailable",
                unavailable_reason=f"energy counter went backwards on {uuid} ({start} → {stop} mJ)",
            )
        return GpuEnergy(
            gpu_uuid=uuid, energy_j=(stop - start) / 1000.0, method="nvml_energy_counter"
        )
