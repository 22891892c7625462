"""Integrated power and compute processes against NVML replayed from a real H100 recording.

Real: ``tests/data/h100_idle.jsonl``, ``h100_load.jsonl``; derived:
``h100_load_no_counter.jsonl`` (see ``tests/data/convert_recorded_trace.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lem.protocol.config import ExperimentConfig
from lem.protocol.devices.nvml import EnergyCounters
from lem.protocol.messages import Run
from lem.workers.metering.contamination import ProcessWatch
from lem.workers.metering.window_telemetry import fill_from_power, telemetry_flags
from lem.workers.workload.measure import MeasurementContext, measure
from tests.data import convert_recorded_trace as convert
from tests.recorded import (
    IDLE,
    LOAD,
    NO_COUNTER,
    PERIOD_S,
    UUID,
    OnReplay,
    Recorded,
    counter_window,
    sampled,
)
from tests.test_measure import FixedBackend
from tests.test_protocol import ENV


def test_counter_and_integrated_power_agree_on_the_real_load(
    replay: Callable[..., OnReplay], tmp_path: Path
) -> None:
    on = replay(LOAD)
    window = sampled(on, 506.75, 508.45, tmp_path / "t.sqlite")
    [gpu] = window.per_gpu
    assert gpu.counter_energy_j is not None and gpu.integrated_energy_j is not None
    assert gpu.mean_power_w is not None and 687.8 <= gpu.mean_power_w <= 696.5  # as recorded
    diff = gpu.counter_vs_power_relative_diff
    assert diff is not None and abs(diff) < 0.02  # seen: -0.9% (1142 J integrated, 1153 J)
    assert telemetry_flags(window) == [] and gpu.pids_seen == [convert.LOAD_PID]
    assert gpu.field_errors["throttle_reasons"] == "Not Supported"  # the recorder's gaps


def test_the_power_reading_lags_the_counter_after_a_load_and_is_flagged(
    replay: Callable[..., OnReplay], tmp_path: Path
) -> None:
    """NVML's power reading on the H100 is a ~1 s moving average: after a load it stays high
    for a second while the counter already runs at idle."""
    on = replay(IDLE)
    decay = sampled(on, 498.9, 500.2, tmp_path / "decay.sqlite")
    diff = decay.per_gpu[0].counter_vs_power_relative_diff
    assert diff is not None and diff > 0.2  # seen: +28% (144 J integrated, 112 J counted)
    assert telemetry_flags(decay) == ["counter_power_mismatch"]
    steady = sampled(on, 500.25, 500.6, tmp_path / "steady.sqlite")
    diff = steady.per_gpu[0].counter_vs_power_relative_diff
    assert diff is not None and abs(diff) < 0.02 and telemetry_flags(steady) == []


def test_with_the_counter_withheld_lem_integrates_the_real_power(
    replay: Callable[..., OnReplay], tmp_path: Path
) -> None:
    """DERIVED fixture: h100_load.jsonl's real rows with the counter withheld (not recorded
    so). Over a span from one counter update to another, the integrated real power must agree
    with the real counter's difference under steady load."""
    load = Recorded.load(LOAD)
    updates_s = load.updates_s()
    begin_s, end_s = updates_s[1], updates_s[-2]  # 506.84 → 508.44: 16 updates
    counted_j = (load.counter_mj(end_s) - load.counter_mj(begin_s)) / 1e3
    on = replay(NO_COUNTER)
    counters = EnergyCounters([UUID])
    try:
        energy = counter_window(on, counters, begin_s, end_s)
    finally:
        counters.close()
    assert energy.energy_j is None and "Not Supported" in (energy.unavailable_reason or "")
    filled = fill_from_power(energy, sampled(on, begin_s, end_s, tmp_path / "t.sqlite"))
    [gpu] = filled.per_gpu
    assert gpu.method == "nvml_power_integration" and filled.energy_j is not None
    assert "integrated power samples" in (gpu.unavailable_reason or "")
    assert filled.energy_j == pytest.approx(counted_j, rel=0.02)  # seen: 1107.5 J vs 1111.6 J


# Contamination: the recorder's load process.


class WorkerOnTheGpu:
    """The recorded process list plus this worker, as NVML lists a worker computing on the
    GPU (the recording was made without lem, so lem's own process is not in it)."""

    def __init__(self, counters: EnergyCounters) -> None:
        self.counters = counters

    def compute_pids(self, uuid: str) -> set[int] | str:
        listed = self.counters.compute_pids(uuid)
        return listed if isinstance(listed, str) else listed | {os.getpid()}


@pytest.mark.parametrize("name", [IDLE, LOAD])
def test_the_recorded_load_process_contaminates_a_measurement(
    replay: Callable[..., OnReplay], name: str
) -> None:
    if os.getpid() == convert.LOAD_PID:
        pytest.skip(f"this test process has the recorded load process's pid {os.getpid()}")
    on = replay(name)
    begin_s = on.trace.times_s[0] + 0.2
    on.goto(begin_s)
    counters = EnergyCounters([UUID])
    try:
        context = MeasurementContext(
            worker_id="w", backend=FixedBackend(1.5, during=lambda: on.goto(begin_s + 1.5)),
            environment=ENV, counters=counters, gpu_uuids=[UUID], energy_unavailable_reason=None,
            counter_period_s=PERIOD_S, processes=WorkerOnTheGpu(counters),
        )  # fmt: skip
        run = Run(experiment_id="e", cycle=0, config=ExperimentConfig(min_window_s=0))
        m = measure(run, context, threading.Event(), lambda *a: None)
    finally:
        counters.close()
    counted_mj = on.trace.counter_mj(begin_s + 1.5) - on.trace.counter_mj(begin_s)
    assert m.energy.energy_j == counted_mj / 1e3
    assert m.energy.energy_bound_j == pytest.approx(2 * PERIOD_S * counted_mj / 1e3 / 1.5)
    if name == LOAD:
        assert "contaminated" in m.flags and m.observed.foreign_processes == f"{UUID}: PIDs [904]"
    else:  # idle: nobody else on the GPU
        assert "contaminated" not in m.flags and m.observed.foreign_processes is None


def test_alone_in_the_recording_the_load_process_passes_for_the_worker(
    replay: Callable[..., OnReplay],
) -> None:
    """Without this worker's PID in NVML's list (a PID namespace), lem takes a lone compute
    process to be itself: the recorded list alone ({904}) does not flag the window."""
    replay(LOAD)
    counters = EnergyCounters([UUID])
    try:
        assert counters.compute_pids(UUID) == {convert.LOAD_PID}
        watch = ProcessWatch(counters, [UUID], own_pid=os.getpid() + 1_000_000)
        watch.begin()
        watch.end()
    finally:
        counters.close()
    assert watch.flags() == [] and watch.describe() == ""
