"""Telemetry for a measured window: monotonic edges, the sidecar's samples, derived flags.

The window's edges are taken with ``time.monotonic()`` (CLOCK_MONOTONIC, shared with the
sampler sidecar) right beside the energy counter reads. Afterwards the sidecar's samples in
between give the power series, thermal state and throttle reasons; where a GPU's energy
counter could not be read, the trapezoid of its power samples stands in, and says so.
"""

from __future__ import annotations

import time

import msgspec

from lem.protocol.results import GpuEnergy
from lem.protocol.telemetry import TelemetryWindow
from lem.workers.metering.energy import WindowEnergy
from lem.workers.metering.telemetry import Sampler, TelemetryUnavailable

# NVML clock-event (throttle) reason bits.
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80
COUNTER_POWER_MISMATCH = 0.05  # |integrated − counter| / counter above this is flagged


class MonotonicEdges:
    """Records ``time.monotonic()`` (s) at the window's begin and end, and the wall clock
    (Unix s) at its begin."""

    def __init__(self) -> None:
        self.begin_s: float | None = None
        self.end_s: float | None = None
        self.begin_unix_s: float | None = None

    def begin(self) -> None:
        self.begin_unix_s = time.time()
        self.begin_s = time.monotonic()

    def end(self) -> None:
        self.end_s = time.monotonic()


def read_telemetry(
    sampler: Sampler | None, edges: MonotonicEdges, reason: str | None
) -> tuple[TelemetryWindow | None, str | None]:
    """The sidecar's samples over the window, or None with the reason."""
    if sampler is None:
        return None, reason or "no telemetry sampler"
    if edges.begin_s is None or edges.end_s is None:
        return None, "the window never began or never ended"
    try:
        return sampler.window(edges.begin_s, edges.end_s), None
    except TelemetryUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # telemetry must never cost a measurement
        return None, f"telemetry could not be read: {type(exc).__name__}: {exc}"


def telemetry_flags(window: TelemetryWindow | None) -> list[str]:
    """Flags from throttle reasons and the counter-vs-power cross-check."""
    if window is None:
        return []
    flags: set[str] = set()
    for gpu in window.per_gpu:
        seen = gpu.throttle_reasons_seen or 0
        if seen & (SW_THERMAL | HW_THERMAL | HW_SLOWDOWN):
            flags.add("thermal_throttle")
        if seen & HW_POWER_BRAKE:
            flags.add("power_brake")
        if seen & SW_POWER_CAP:
            flags.add("power_capped")
        diff = gpu.counter_vs_power_relative_diff
        if diff is not None and abs(diff) > COUNTER_POWER_MISMATCH:
            flags.add("counter_power_mismatch")
    return sorted(flags)


def fill_from_power(energy: WindowEnergy, window: TelemetryWindow | None) -> WindowEnergy:
    """Where a GPU's counter gave no energy, use its integrated power samples instead."""
    if window is None or energy.energy_j is not None:
        return energy
    integrated = {g.gpu_uuid: g.integrated_energy_j for g in window.per_gpu}
    per_gpu: list[GpuEnergy] = []
    for gpu in energy.per_gpu:
        value = integrated.get(gpu.gpu_uuid)
        if gpu.energy_j is None and value is not None and _counter_missing(gpu):
            reason = f"counter unavailable ({gpu.unavailable_reason}): integrated power samples"
            gpu = msgspec.structs.replace(
                gpu, energy_j=value, method="nvml_power_integration", unavailable_reason=reason
            )
        per_gpu.append(gpu)
    if any(g.energy_j is None for g in per_gpu):
        return WindowEnergy(per_gpu, None, energy.unavailable_reason, energy.window_duration_s)
    total_j = sum(g.energy_j for g in per_gpu if g.energy_j is not None)
    return WindowEnergy(per_gpu, total_j, None, energy.window_duration_s)


def _counter_missing(gpu: GpuEnergy) -> bool:
    """The counter itself failed (not, say, a CPU run, which has no window to fill)."""
    return "energy counter" in (gpu.unavailable_reason or "")
