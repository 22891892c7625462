"""The telemetry sidecar as real processes on replayed NVML (tests/data/, synthetic traces:
exact power steps to check integration against, and the memory clock, utilisation, memory
used and throttle reasons the H100 recording lacks; the sidecar on the real trace:
test_window_telemetry, test_recorded_power)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from lem.workers.metering.telemetry import (
    GpuTelemetry,
    Sampler,
    TelemetryUnavailable,
    counter_vs_power_relative_diff,
    integrate_power_j,
)
from tests.data import make_traces as traces

DATA = Path(__file__).parent / "data"
INTERVAL_S = 0.1


def replay_env(trace: str) -> dict[str, str]:
    """This process's environment with NVML replayed from ``trace`` (in tests/data/)."""
    return {**os.environ, "LEM_NVML_REPLAY": str(DATA / trace)}


def rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: its reaper may not be ours)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass(frozen=True)
class Recording:
    """One sidecar's samples of the idle/load trace: ~4.6 s, one replay loop and a bit."""

    sampler: Sampler
    t_ready_s: float  # monotonic s when the first row was committed
    t_done_s: float  # monotonic s when the test stopped waiting

    def gpu(self, t_begin_s: float, t_end_s: float) -> GpuTelemetry:
        (gpu,) = self.sampler.window(t_begin_s, t_end_s).per_gpu
        assert gpu.gpu_uuid == traces.H100_UUID
        return gpu


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    db = tmp_path_factory.mktemp("telemetry") / "samples.sqlite"
    env = replay_env("h100_like_idle_load.jsonl")
    sampler = Sampler([traces.H100_UUID], db, INTERVAL_S, INTERVAL_S, env=env)
    sampler.start()
    try:
        sampler.ready(timeout_s=10.0)
        t_ready_s = time.monotonic()
        time.sleep(4.6)
        yield Recording(sampler, t_ready_s, time.monotonic())
    finally:
        assert sampler.stop() == 0


def phases(gpu: GpuTelemetry, t_begin_s: float) -> tuple[float, float]:
    """Monotonic s of the first sample and of the first sample reading the load power."""
    load = [t for t, p in zip(gpu.t_s, gpu.power_w, strict=True) if p == traces.LOAD_W]
    return t_begin_s + gpu.t_s[0], t_begin_s + load[0]


def test_rows_come_at_10_hz(recording: Recording) -> None:
    t_begin_s = recording.t_ready_s + 0.5
    gpu = recording.gpu(t_begin_s, t_begin_s + 1.5)
    assert 0.7 * 15 <= gpu.samples <= 1.3 * 15
    assert gpu.t_s == sorted(gpu.t_s) and gpu.t_s[0] >= 0 and gpu.t_s[-1] <= 1.5


@pytest.mark.parametrize("phase", ["idle", "load"])
def test_integrated_power_matches_the_trace_inside_a_phase(
    recording: Recording, phase: str
) -> None:
    whole = recording.gpu(recording.t_ready_s - 1.0, recording.t_done_s)
    t_first_s, t_load_s = phases(whole, recording.t_ready_s - 1.0)
    if phase == "idle":  # the replay starts idle, its load reading comes ~2.04 s later
        t_begin_s, t_end_s, power_w = t_first_s + 0.25, t_load_s - 0.25, traces.IDLE_W
    else:  # the load phase reads 300 W for ~1.96 s
        t_begin_s, t_end_s, power_w = t_load_s + 0.25, t_load_s + 1.6, traces.LOAD_W
    assert t_end_s - t_begin_s > 1.0
    gpu = recording.gpu(t_begin_s, t_end_s)
    assert set(gpu.power_w) == {power_w}
    assert gpu.power_covered_s == pytest.approx(t_end_s - t_begin_s)
    assert gpu.integrated_energy_j == pytest.approx(power_w * (t_end_s - t_begin_s), rel=0.03)
    assert gpu.mean_power_w == pytest.approx(power_w, rel=0.03)


def test_counter_and_integrated_power_agree_over_a_long_window(recording: Recording) -> None:
    gpu = recording.gpu(recording.t_ready_s + 0.1, recording.t_done_s - 0.1)
    assert gpu.integrated_energy_j is not None and gpu.counter_energy_j is not None
    assert gpu.integrated_energy_j > 600  # idle and load both inside: ≥ ~4.2 s
    diff = counter_vs_power_relative_diff(gpu.counter_energy_j, gpu.integrated_energy_j)
    assert diff == gpu.counter_vs_power_relative_diff
    assert diff is not None and abs(diff) < 0.03


def test_the_window_summarises_every_field(recording: Recording) -> None:
    gpu = recording.gpu(recording.t_ready_s, recording.t_done_s)
    assert gpu.throttle_reasons_seen == traces.GPU_IDLE_MASK | traces.SW_POWER_CAP_MASK
    assert gpu.pids_seen == [traces.LOAD_PID]
    assert set(gpu.sm_clock_mhz) == {345, 1980} and set(gpu.mem_clock_mhz) == {2619}
    assert set(gpu.mem_used_mib) == {traces.IDLE_MEM_USED_MIB, traces.LOAD_MEM_USED_MIB}
    assert set(gpu.gpu_util_pct) == {0, traces.LOAD_GPU_UTIL_PCT}
    assert gpu.temperature_start_c == 33 and gpu.max_temperature_c is not None
    assert gpu.max_temperature_c >= 42 and gpu.sm_clock_start_mhz == 345
    assert gpu.field_errors == {} and gpu.counter_energy_unavailable_reason is None


def test_an_unsupported_field_is_null_not_zero(tmp_path: Path) -> None:
    db = tmp_path / "pascal.sqlite"
    uuid = "GPU-replay-pascal"  # power only: no energy counter, clocks or temperature
    sampler = Sampler([uuid], db, env=replay_env("no_energy_counter.jsonl"))
    sampler.start()
    try:
        sampler.ready()
        t_begin_s = time.monotonic()
        time.sleep(0.5)
        (gpu,) = sampler.window(t_begin_s, time.monotonic()).per_gpu
    finally:
        assert sampler.stop() == 0
    nulls = "energy_mj IS NULL AND sm_clock_mhz IS NULL AND temperature_c IS NULL"
    assert rows(db, f"SELECT COUNT(*) FROM samples WHERE NOT ({nulls})") == [(0,)]
    assert rows(db, "SELECT DISTINCT power_w FROM samples") == [(60.0,)]
    errors = dict(rows(db, "SELECT field, error FROM field_errors"))
    assert errors["energy_mj"] == "Not Supported" and "throttle_reasons" in errors
    assert gpu.counter_energy_j is None and gpu.counter_energy_unavailable_reason == "Not Supported"
    assert set(gpu.temperature_c) == {None} and gpu.max_temperature_c is None
    assert gpu.integrated_energy_j == pytest.approx(60.0 * 0.5, rel=0.1)


def test_the_window_asks_for_a_commit_and_sigterm_commits_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "samples.sqlite"  # commits only the first tick, then on request or at exit
    env = replay_env("h100_like_idle_load.jsonl")
    sampler = Sampler([traces.H100_UUID], db, commit_interval_s=60.0, env=env)
    sampler.start()
    sampler.ready()
    t_begin_s = time.monotonic()
    time.sleep(0.6)
    t_asked_s = time.monotonic()
    gpu = sampler.window(t_begin_s, t_asked_s).per_gpu[0]
    assert time.monotonic() - t_asked_s < 1.0 and gpu.samples >= 4
    time.sleep(0.6)
    t_stop_s = time.monotonic()
    assert sampler.stop() == 0
    (newest_s,) = rows(db, "SELECT MAX(t_monotonic_s) FROM samples")[0]
    assert isinstance(newest_s, float) and newest_s > t_stop_s - 3 * INTERVAL_S


PARENT = textwrap.dedent(
    """
    import sys, time
    from lem.workers.metering.telemetry import Sampler
    sampler = Sampler([sys.argv[1]], sys.argv[2], commit_interval_s=60.0)
    sampler.start()
    sampler.ready()
    print(sampler.process.pid, flush=True)
    time.sleep(60)
    """
)


def test_the_sidecar_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "samples.sqlite"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, traces.H100_UUID, str(db)],
        stdout=subprocess.PIPE,
        env=replay_env("h100_like_idle_load.jsonl"),
    )
    sidecar_pid = 0
    try:
        assert parent.stdout is not None
        sidecar_pid = int(parent.stdout.readline())
        assert psutil.Process(sidecar_pid).ppid() == parent.pid
        time.sleep(0.8)
        t_kill_s = time.monotonic()
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline_s = time.monotonic() + 5.0
        while not gone(sidecar_pid) and time.monotonic() < deadline_s:
            time.sleep(0.05)
        assert gone(sidecar_pid), "the sidecar outlived its parent"
    finally:
        parent.kill()
        if sidecar_pid and not gone(sidecar_pid):  # do not leave an orphan behind
            os.kill(sidecar_pid, signal.SIGKILL)
    (newest_s,) = rows(db, "SELECT MAX(t_monotonic_s) FROM samples")[0]
    assert isinstance(newest_s, float) and newest_s > t_kill_s - 3 * INTERVAL_S  # committed


def test_ready_gives_the_reason_the_sidecar_failed(tmp_path: Path) -> None:
    sampler = Sampler(["GPU-not-in-this-node"], tmp_path / "s.sqlite", env=replay_env("mig.jsonl"))
    sampler.start()
    with pytest.raises(TelemetryUnavailable, match="Not Found"):
        sampler.ready()
    assert sampler.stop() == 2


def test_the_sidecar_imports_neither_torch_nor_cuda() -> None:
    code = "import sys, lem.workers.metering.sampler, lem.protocol.devices.nvml\n"
    code += "import lem.workers.metering.telemetry\n"
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cuda')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_integrate_power_j_is_the_trapezoid_rule() -> None:
    assert integrate_power_j([0.0, 2.0], [100.0, 100.0]) == 200.0  # constant
    assert integrate_power_j([0.0, 1.0], [0.0, 100.0]) == 50.0  # ramp
    assert integrate_power_j([0.0, 1.0, 2.0], [0.0, 100.0, 0.0]) == 100.0  # triangle
    assert integrate_power_j([0.0, 0.1, 1.1], [75.0, 300.0, 300.0]) == pytest.approx(318.75)
    assert integrate_power_j([5.0], [300.0]) is None
    assert integrate_power_j([], []) is None
    with pytest.raises(ValueError):
        integrate_power_j([0.0, 1.0], [1.0])


def test_counter_vs_power_relative_diff() -> None:
    assert counter_vs_power_relative_diff(100.0, 103.0) == pytest.approx(0.03)
    assert counter_vs_power_relative_diff(100.0, 97.0) == pytest.approx(-0.03)
    assert counter_vs_power_relative_diff(None, 97.0) is None
    assert counter_vs_power_relative_diff(100.0, None) is None
    assert counter_vs_power_relative_diff(0.0, 1.0) is None
