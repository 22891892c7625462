"""Telemetry of one measured window: per-GPU sample columns and their summaries.

Sampled by the worker's CUDA-free sidecar (``lem.workers.metering.sampler``) and cut to the window
by ``lem.workers.metering.telemetry``; carried in a ``Measurement``.
"""

from __future__ import annotations

import msgspec


class GpuTelemetry(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU over a window. Lists are columns, one entry per sample inside the window
    (``t_s``: seconds since the window's begin); None where NVML could not read a field.

    ``integrated_energy_j`` (J) is the trapezoid of power over the window, its edges
    interpolated from the samples just outside; ``power_covered_s`` (s) is how much of the
    window that spans. ``counter_energy_j`` (J) is the energy counter, interpolated the same
    way. ``field_errors`` maps a column to NVML's reason it could not be read.
    """

    gpu_uuid: str
    samples: int
    t_s: list[float]
    power_w: list[float | None]
    sm_clock_mhz: list[int | None]
    mem_clock_mhz: list[int | None]
    temperature_c: list[int | None]
    gpu_util_pct: list[int | None]
    mem_util_pct: list[int | None]
    mem_used_mib: list[float | None]
    throttle_reasons: list[int | None]
    integrated_energy_j: float | None
    integrated_energy_unavailable_reason: str | None = None
    power_covered_s: float = 0.0
    mean_power_w: float | None = None
    counter_energy_j: float | None = None
    counter_energy_unavailable_reason: str | None = None
    counter_vs_power_relative_diff: float | None = None
    max_temperature_c: int | None = None
    temperature_start_c: int | None = None
    temperature_end_c: int | None = None
    sm_clock_start_mhz: int | None = None
    sm_clock_end_mhz: int | None = None
    throttle_reasons_seen: int | None = None  # OR of every mask read; None if none was
    pids_seen: list[int] = []
    field_errors: dict[str, str] = {}


class TelemetryWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The sampler's record of [``t_begin_monotonic_s``, ``t_end_monotonic_s``] (s)."""

    t_begin_monotonic_s: float
    t_end_monotonic_s: float
    duration_s: float
    per_gpu: list[GpuTelemetry]
