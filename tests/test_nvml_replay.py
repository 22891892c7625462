"""lem's real NVML code run against replayed traces (tests/data/): no GPU needed.

Here the replay itself and what the lent H100 cannot show, on synthetic traces (each test
says why); the counter, power and processes of a real H100 recording are tested in
``test_recorded_traces.py`` and ``test_recorded_power.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lem.protocol.devices import nvml
from lem.protocol.devices.nvml import EnergyCounters, NvmlUnavailable, inventory
from lem.protocol.devices.nvml_replay import (
    NVMLError,
    PastEnd,
    ReplayNvml,
    install,
    load_replay,
    uninstall_all,
)
from lem.protocol.results import GpuInfo
from lem.workers.metering.energy import EnergyWindow
from tests.data import convert_recorded_trace as recorded
from tests.data import make_traces as traces

DATA = Path(__file__).parent / "data"


class FakeClock:
    """A clock in seconds that moves when told, and by ``tick_s`` at every read."""

    def __init__(self, tick_s: float = 0.0) -> None:
        self.t_s = 0.0
        self.tick_s = tick_s

    def __call__(self) -> float:
        now_s = self.t_s
        self.t_s += self.tick_s
        return now_s


Use = Callable[..., ReplayNvml]


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Iterator[Use]:
    """Point ``LEM_NVML_REPLAY`` at a trace and install its replay with a fake clock."""
    monkeypatch.setattr(nvml, "_init_count", 0)

    def use_trace(
        trace: str | Path, clock: FakeClock | None = None, past_end: PastEnd = "loop"
    ) -> ReplayNvml:
        path = DATA / trace if isinstance(trace, str) else trace
        monkeypatch.setenv("LEM_NVML_REPLAY", str(path))
        return install(load_replay(path, clock or FakeClock(), past_end))

    yield use_trace
    uninstall_all()


def test_committed_traces_are_the_generators_and_say_synthetic(tmp_path: Path) -> None:
    traces.main(tmp_path)
    for name in traces.TRACES:
        committed = (DATA / name).read_bytes()
        assert committed == (tmp_path / name).read_bytes(), f"rerun make_traces.py for {name}"
        assert len(committed) < 50_000
        header = json.loads(committed.splitlines()[0])
        assert header["synthetic"] is True and len(header["synthetic_because"]) > 20


def test_lem_takes_the_replay_instead_of_pynvml(use: Use, monkeypatch: pytest.MonkeyPatch) -> None:
    replay = use("mig.jsonl")
    assert nvml._pynvml() is replay
    monkeypatch.delenv("LEM_NVML_REPLAY")
    assert nvml._pynvml() is not replay


def test_inventory_lists_the_replayed_gpu(use: Use) -> None:
    use("h100_load.jsonl")  # real: recorded on an H100, its header from lem's inventory there
    inv = inventory()
    assert inv.unavailable_reason is None
    assert inv.gpus == [
        GpuInfo(
            index=0,
            uuid=recorded.DEVICE["uuid"],
            name=recorded.GPU,
            memory_total_mib=81_559.0,
            power_limit_w=700.0,
            energy_counter_supported=True,
            mig_mode_enabled=False,
        )
    ]
    assert (inv.driver_version, inv.cuda_driver_version) == ("580.159.04", "13.0")
    assert nvml._init_count == 0


def test_inventory_reports_mig_enabled(use: Use) -> None:
    """Synthetic: the lent H100's MIG setting must not be changed to record one."""
    use("mig.jsonl")
    inv = inventory()
    assert [g.mig_mode_enabled for g in inv.gpus] == [True]
    assert inv.cuda_driver_version == "12.8"


def test_recorder_output_replays_as_one_default_gpu(use: Use, tmp_path: Path) -> None:
    """The recorder's own format: no devices, no device index, slow fields now and then."""
    path = tmp_path / "recorded.jsonl"
    lines: list[dict[str, Any]] = [{"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.95.05"}]
    for i in range(50):
        row: dict[str, Any] = {"phase": "idle", "t_s": 812.5 + i * 0.004, "power_mw": 70_000}
        row["energy_mj"] = 10 + i // 25
        if i % 25 == 0:
            row.update({"sm_clock_mhz": 345, "temperature_c": 30, "processes": []})
        lines.append(row)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    use(path)
    (gpu,) = inventory().gpus
    assert (gpu.uuid, gpu.name, gpu.energy_counter_supported) == (
        "GPU-replay-0",
        "NVIDIA H100 80GB HBM3",
        True,
    )
    assert (gpu.memory_total_mib, gpu.power_limit_w, gpu.mig_mode_enabled) == (None, None, None)


def test_unsupported_counter_gives_null_energy_with_a_reason(use: Use) -> None:
    """Synthetic: a pre-Volta GPU has no counter; the lent H100 has one (its real power with
    the counter withheld: test_recorded_power)."""
    use("no_energy_counter.jsonl")
    (gpu,) = inventory().gpus
    assert not gpu.energy_counter_supported and gpu.mig_mode_enabled is None
    counters = EnergyCounters([gpu.uuid])
    try:
        window = EnergyWindow(counters, [gpu.uuid], None)
        window.begin()
        window.end()
        assert counters.read_power_w(gpu.uuid) == 60.0
    finally:
        counters.close()
    result = window.result()
    assert result.energy_j is None and result.per_gpu[0].method == "unavailable"
    assert result.unavailable_reason is not None
    assert "Not Supported" in result.unavailable_reason and gpu.uuid in result.unavailable_reason


def test_compute_pids_sees_a_foreign_process_appear(use: Use) -> None:
    """Synthetic: a second process starting next to ours mid-window; the recording has one
    process, there from the start of its load phase (real: test_recorded_power)."""
    clock = FakeClock()
    use("foreign_process.jsonl", clock)
    counters = EnergyCounters([traces.H100_UUID])
    try:
        clock.t_s = 0.2
        assert counters.compute_pids(traces.H100_UUID) == {traces.FIRST_PID}
        clock.t_s = traces.FOREIGN_FROM_S + 0.3
        assert counters.compute_pids(traces.H100_UUID) == {traces.FIRST_PID, traces.FOREIGN_PID}
    finally:
        counters.close()


def test_a_gpu_lost_at_start_fails_the_counters_not_the_inventory(use: Use) -> None:
    """Synthetic: a GPU cannot be taken off the lent machine's bus to record this."""
    use("lost_gpu.jsonl")
    with pytest.raises(NvmlUnavailable, match="GPU is lost") as lost:
        EnergyCounters([traces.LOST_UUID])
    with pytest.raises(NvmlUnavailable, match="Not Found") as unknown:
        EnergyCounters(["GPU-not-in-this-node"])
    # The failed constructors closed their sessions themselves: the kept tracebacks stop
    # garbage collection from closing them for it.
    assert nvml._init_count == 0 and lost.tb is not None and unknown.tb is not None
    inv = inventory()
    # The healthy GPU is still listed; the lost one is named among the problems.
    assert [g.uuid for g in inv.gpus] == [traces.OK_UUID] and inv.unavailable_reason is None
    assert len(inv.problems) == 1 and "GPU is lost" in inv.problems[0]


def test_a_gpu_lost_mid_window_gives_null_energy_with_a_reason(use: Use) -> None:
    """Synthetic, as above."""
    clock = FakeClock()
    replay = use("lost_gpu.jsonl", clock)
    counters = EnergyCounters([traces.OK_UUID])
    try:
        window = EnergyWindow(counters, [traces.OK_UUID], None, clock=clock)
        window.begin()
        clock.t_s = 0.5
        replay.lose(traces.OK_UUID)
        window.end()
        assert counters.read_power_w(traces.OK_UUID) is None
        assert "GPU is lost" in str(counters.compute_pids(traces.OK_UUID))
    finally:
        counters.close()
    result = window.result()
    assert result.energy_j is None and "GPU is lost" in (result.unavailable_reason or "")


def test_an_unreadable_trace_is_a_reason_not_a_crash(use: Use, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t_s": 1.0}\n')
    use("mig.jsonl")  # installs a good one, then point the variable elsewhere
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEM_NVML_REPLAY", str(bad))
        assert "cannot replay NVML trace" in (inventory().unavailable_reason or "")
        mp.setenv("LEM_NVML_REPLAY", str(tmp_path / "absent.jsonl"))
        assert "cannot replay NVML trace" in (inventory().unavailable_reason or "")


# The replay itself, on the synthetic H100 trace: its exact values make each step checkable.


def test_replay_is_a_step_function_starting_at_the_first_row() -> None:
    clock = FakeClock()
    replay = load_replay(DATA / "h100_like_idle_load.jsonl", clock)
    with pytest.raises(NVMLError, match="Uninitialized"):
        replay.nvmlDeviceGetCount()
    clock.t_s = 10.0
    replay.nvmlInit()
    handle = replay.nvmlDeviceGetHandleByUUID(traces.H100_UUID)
    assert replay.now_s() == traces.T0_S
    first = replay.nvmlDeviceGetTotalEnergyConsumption(handle)
    assert first == traces.E0_MJ
    clock.t_s = 10.0 + 0.0399  # the first change is on the row at 0.040 s
    assert replay.nvmlDeviceGetTotalEnergyConsumption(handle) == first
    clock.t_s = 10.0 + 0.040
    assert replay.nvmlDeviceGetTotalEnergyConsumption(handle) > first
    replay.nvmlShutdown()
    with pytest.raises(NVMLError, match="Uninitialized"):
        replay.nvmlDeviceGetPowerUsage(handle)
    replay.nvmlInit()  # a second init does not rewind
    assert replay.now_s() == traces.T0_S + 0.040


def test_looping_keeps_the_counter_monotonic_and_holding_freezes_it() -> None:
    clock = FakeClock()
    path = DATA / "h100_like_idle_load.jsonl"
    loop, hold = load_replay(path, clock), load_replay(path, clock, past_end="hold")
    for replay in (loop, hold):
        replay.nvmlInit()
    assert loop.loop_s == pytest.approx(4.0)
    readings = []
    for i in range(3 * 4000 // 7):
        clock.t_s = i * 0.007
        readings.append(
            loop.nvmlDeviceGetTotalEnergyConsumption(loop.nvmlDeviceGetHandleByIndex(0))
        )
    assert readings == sorted(readings)
    per_loop_mj = loop.devices[0].energy_per_loop_mj
    clock.t_s = 1.0
    one = loop.nvmlDeviceGetTotalEnergyConsumption(loop.nvmlDeviceGetHandleByIndex(0))
    clock.t_s = 1.0 + 2 * loop.loop_s
    assert loop.nvmlDeviceGetTotalEnergyConsumption(loop.nvmlDeviceGetHandleByIndex(0)) == (
        one + 2 * per_loop_mj
    )
    assert loop.nvmlDeviceGetPowerUsage(loop.nvmlDeviceGetHandleByIndex(0)) == 75_000
    clock.t_s = 3.99
    last = hold.nvmlDeviceGetTotalEnergyConsumption(hold.nvmlDeviceGetHandleByIndex(0))
    clock.t_s = 100.0
    assert hold.nvmlDeviceGetTotalEnergyConsumption(hold.nvmlDeviceGetHandleByIndex(0)) == last
    assert hold.nvmlDeviceGetPowerUsage(hold.nvmlDeviceGetHandleByIndex(0)) == 300_000
