"""Telemetry in a measurement: flags from throttle reasons and the cross-check, power
integration where the counter fails, and a real sidecar over a replayed GPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lem.protocol.codec import decode_event, encode
from lem.protocol.config import ExperimentConfig
from lem.protocol.devices import nvml
from lem.protocol.devices.nvml import EnergyCounters
from lem.protocol.messages import Result, Run
from lem.protocol.results import GpuEnergy
from lem.protocol.telemetry import GpuTelemetry, TelemetryWindow
from lem.workers.metering.energy import WindowEnergy
from lem.workers.metering.telemetry import Sampler
from lem.workers.metering.window_telemetry import fill_from_power, telemetry_flags
from lem.workers.workload.measure import MeasurementContext, measure
from tests.data.convert_recorded_trace import DEVICE
from tests.test_measure import FixedBackend
from tests.test_protocol import ENV

DATA = Path(__file__).parent / "data"
UUID = DEVICE["uuid"]  # the real H100 of tests/data/h100_load.jsonl


def gpu(uuid: str = "A", throttle: int | None = None, diff: float | None = None,
        integrated_j: float | None = 500.0) -> GpuTelemetry:  # fmt: skip
    return GpuTelemetry(
        gpu_uuid=uuid, samples=3, t_s=[0.0, 0.1, 0.2], power_w=[300.0] * 3,
        sm_clock_mhz=[1980] * 3, mem_clock_mhz=[2619] * 3, temperature_c=[60] * 3,
        gpu_util_pct=[100] * 3, mem_util_pct=[50] * 3, mem_used_mib=[1024.0] * 3,
        throttle_reasons=[throttle] * 3, integrated_energy_j=integrated_j,
        throttle_reasons_seen=throttle, counter_vs_power_relative_diff=diff,
    )  # fmt: skip


def window(*gpus: GpuTelemetry) -> TelemetryWindow:
    return TelemetryWindow(
        t_begin_monotonic_s=0.0, t_end_monotonic_s=0.2, duration_s=0.2, per_gpu=list(gpus)
    )


def test_flags_from_throttle_bits_and_the_cross_check() -> None:
    assert telemetry_flags(None) == []
    assert telemetry_flags(window(gpu(throttle=0x1, diff=0.01))) == []  # idle bit, 1% off
    assert telemetry_flags(window(gpu(throttle=0x4))) == ["power_capped"]
    assert telemetry_flags(window(gpu(throttle=0x40 | 0x80))) == ["power_brake", "thermal_throttle"]
    assert telemetry_flags(window(gpu(diff=-0.08))) == ["counter_power_mismatch"]


def test_power_samples_stand_in_for_a_failed_counter_and_say_so() -> None:
    why = "energy counter unsupported or unreadable on A: Not Supported"
    failed = GpuEnergy(gpu_uuid="A", energy_j=None, method="unavailable", unavailable_reason=why)
    energy = WindowEnergy([failed], None, failed.unavailable_reason, 2.0)
    filled = fill_from_power(energy, window(gpu(integrated_j=512.0)))
    assert filled.energy_j == pytest.approx(512.0)
    assert filled.per_gpu[0].method == "nvml_power_integration"
    assert "integrated power samples" in (filled.per_gpu[0].unavailable_reason or "")
    cpu_run = GpuEnergy(gpu_uuid="A", energy_j=None, method="unavailable",
                        unavailable_reason="the experiment ran on CPU")  # fmt: skip
    untouched = WindowEnergy([cpu_run], None, "cpu", 2.0)
    assert fill_from_power(untouched, window(gpu())).energy_j is None


def test_a_real_sidecar_gives_the_window_its_telemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real H100 load trace (tests/data/h100_load.jsonl): every power reading there
    lies in 687.8-696.5 W, so any 1.5 s of it (the replay loops) gives ~690 W."""
    monkeypatch.setenv("LEM_NVML_REPLAY", str(DATA / "h100_load.jsonl"))
    monkeypatch.setattr(nvml, "_init_count", 0)
    counters = EnergyCounters([UUID])
    sampler = Sampler([UUID], tmp_path / "t.db")
    sampler.start()
    try:
        sampler.ready(timeout_s=10.0)
        context = MeasurementContext(
            worker_id="w", backend=FixedBackend(1.5, during=lambda: time.sleep(1.5)),
            environment=ENV, counters=counters, gpu_uuids=[UUID],
            energy_unavailable_reason=None, counter_period_s=0.1, sampler=sampler,
        )  # fmt: skip
        run = Run(experiment_id="e", cycle=0, config=ExperimentConfig(min_window_s=0))
        m = measure(run, context, threading.Event(), lambda *a: None)
    finally:
        sampler.stop()
        counters.close()
    assert m.observed.telemetry is not None and m.observed.telemetry_unavailable_reason is None
    [series] = m.observed.telemetry.per_gpu
    assert 10 <= series.samples <= 20  # 10 Hz over 1.5 s
    assert series.power_w and all(687.8 <= p <= 696.5 for p in series.power_w if p is not None)
    assert series.integrated_energy_j is not None and series.mean_power_w is not None
    assert 687.8 <= series.mean_power_w <= 696.5
    assert series.integrated_energy_j == pytest.approx(series.mean_power_w * 1.5, rel=0.1)
    assert series.pids_seen == [904]  # the recorder's load process
    # The counter: ~690 W for the ~1.5 s slept, give or take two ~70 J updates.
    assert m.energy.energy_j is not None and 690 * 1.5 - 150 < m.energy.energy_j < 697 * 1.6 + 150
    decoded = decode_event(encode(Result(worker_id="w", measurement=m)))
    assert isinstance(decoded, Result)
    assert decoded.measurement.observed.telemetry == m.observed.telemetry


def test_a_broken_sampler_costs_the_telemetry_not_the_measurement() -> None:
    from lem.workers.metering.window_telemetry import MonotonicEdges, read_telemetry

    class Broken(Sampler):
        def window(self, t_begin_s: float, t_end_s: float, wait_s: float = 2.0) -> TelemetryWindow:
            raise RuntimeError("database disk image is malformed")

    edges = MonotonicEdges()
    edges.begin()
    edges.end()
    broken = Broken(["A"], Path("/nonexistent/t.db"))
    telemetry, reason = read_telemetry(broken, edges, None)
    assert telemetry is None and "malformed" in (reason or "")
    assert read_telemetry(None, edges, "no sampler here") == (None, "no sampler here")
