"""Keeping each GPU's idle power baseline fresh, and turning gross energy into net energy.

The first baseline of a worker is measured before its first model load, with the GPU idle.
A later re-measurement (older than ``max_age_s``) happens between experiments with the
long-lived worker's model resident but idle; ``model_resident`` records which it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from lem.protocol.config import IdleBaselineConfig
from lem.protocol.results import GpuEnergy, IdleBaselineRecord
from lem.workers.metering.baseline import (
    IdleBaseline,
    measure_idle_baseline,
    needs_remeasure,
    net_energy_clamped,
    net_energy_j,
)
from lem.workers.metering.energy import WindowEnergy


class PowerReader(Protocol):
    def read_power_w(self, uuid: str) -> float | None: ...


class NetEnergy(msgspec.Struct, frozen=True, kw_only=True):
    """Net energy of a window: per GPU, the total (J), why it is missing, and flags."""

    per_gpu: list[GpuEnergy]
    net_energy_j: float | None
    unavailable_reason: str | None
    flags: list[str]


class BaselineKeeper:
    """Measures and keeps one idle baseline per GPU UUID."""

    def __init__(
        self,
        power: PowerReader,
        gpu_uuids: list[str],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._power = power
        self._gpu_uuids = gpu_uuids
        self._clock, self._sleep, self._wall_clock = clock, sleep, wall_clock
        self._baselines: dict[str, IdleBaseline] = {}
        self._model_resident: dict[str, bool] = {}

    def refresh(
        self, config: IdleBaselineConfig, model_resident: bool, on_start: Callable[[], None]
    ) -> None:
        """Measure every GPU whose baseline is missing, unaccepted or too old; call
        ``on_start`` first when any is."""
        now_unix_s = self._wall_clock()
        stale = [
            uuid
            for uuid in self._gpu_uuids
            if needs_remeasure(self._baselines.get(uuid), now_unix_s, config.max_age_s)
        ]
        if stale:
            on_start()
        for uuid in stale:
            self._baselines[uuid] = measure_idle_baseline(
                self._reader(uuid),
                self._clock,
                self._sleep,
                wall_clock=self._wall_clock,
                sample_interval_s=config.sample_interval_s,
                window_s=config.window_s,
                cv_threshold=config.cv_threshold,
                max_wait_s=config.max_wait_s,
            )
            self._model_resident[uuid] = model_resident

    def _reader(self, uuid: str) -> Callable[[], float | None]:
        return lambda: self._power.read_power_w(uuid)

    def records(self) -> list[IdleBaselineRecord]:
        now_unix_s = self._wall_clock()
        return [
            IdleBaselineRecord(
                gpu_uuid=uuid,
                power_w=b.power_w,
                cv=b.cv,
                samples=b.samples,
                method=b.method,
                accepted=b.accepted,
                measured_at_unix_s=b.measured_at_unix_s,
                age_s=now_unix_s - b.measured_at_unix_s,
                model_resident=self._model_resident[uuid],
                reason=b.reason,
            )
            for uuid, b in self._baselines.items()
        ]

    def net(self, energy: WindowEnergy, duration_s: float) -> NetEnergy:
        """Per-GPU and total net energy of ``energy`` over ``duration_s`` seconds."""
        per_gpu: list[GpuEnergy] = []
        reasons: list[str] = []
        flags: set[str] = set()
        for gpu in energy.per_gpu:
            baseline = self._baselines.get(gpu.gpu_uuid)
            idle_w = baseline.power_w if baseline is not None else None
            net_j, note = net_energy_j(gpu.energy_j, idle_w, duration_s)
            if baseline is None:
                note = f"no idle baseline for {gpu.gpu_uuid}"
            elif not baseline.accepted:
                flags.add("idle_baseline_unstable")
            if net_j is not None and net_energy_clamped(gpu.energy_j, idle_w, duration_s):
                flags.add("net_energy_clamped")
            elif net_j is None and note:
                reasons.append(note)
            per_gpu.append(msgspec.structs.replace(gpu, idle_power_w=idle_w, net_energy_j=net_j))
        if reasons or not per_gpu:
            return NetEnergy(
                per_gpu=per_gpu,
                net_energy_j=None,
                unavailable_reason="; ".join(reasons) or "no GPU energy",
                flags=sorted(flags),
            )
        total_j = sum(g.net_energy_j for g in per_gpu if g.net_energy_j is not None)
        return NetEnergy(
            per_gpu=per_gpu, net_energy_j=total_j, unavailable_reason=None, flags=sorted(flags)
        )
