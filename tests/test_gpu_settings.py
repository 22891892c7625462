"""GPU power limits and locked clocks (issue 19, ``protocol/devices/gpu_settings.py``):
checked, applied, read back and restored on a replayed H100 whose settings live in a state
file shared by processes; and the ledger that makes "always restored" survive a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lem.protocol.devices import gpu_settings, state_file
from lem.protocol.devices.gpu_settings import (
    GpuSettings,
    GpuSettingsError,
    Originals,
    SettingsLedger,
    apply,
    read_originals,
    restore,
    setting_problem,
)
from lem.protocol.devices.nvml import inventory
from lem.protocol.errors import BadInput
from tests.settable_gpu import DEFAULT_LIMIT_W, UUID, SettableGpu, settable_gpu, settable_gpu_at

__all__ = ["settable_gpu"]  # the fixture


def limit_now_w() -> float | None:
    [gpu] = inventory().gpus
    return gpu.power_limit_w


def test_apply_reads_back_and_restore_sets_everything_back(settable_gpu: SettableGpu) -> None:
    asked = GpuSettings(power_limit_w=300, sm_clocks_mhz=1500, memory_clocks_mhz=1593)
    assert setting_problem(UUID, asked) is None
    originals = read_originals(UUID, asked)
    assert originals == Originals(UUID, DEFAULT_LIMIT_W, True, True)
    before = len(settable_gpu.calls())  # the permission probe: the limit in force set back
    applied = apply(UUID, asked)
    assert applied.asked == asked and applied.power_limit_w == 300.0
    assert applied.sm_clock_mhz == 1500  # the trace's 1755 MHz, held at the locked clock
    assert limit_now_w() == 300.0  # what lem's inventory (and a worker) reads now
    assert settable_gpu.read()["devices"][UUID] == {
        "power_limit_mw": 300_000, "sm_locked_mhz": [1500, 1500], "mem_locked_mhz": [1593, 1593]
    }  # fmt: skip
    restore(originals)
    assert limit_now_w() == DEFAULT_LIMIT_W
    assert settable_gpu.read()["devices"][UUID] == {"power_limit_mw": 700_000}  # unlocked
    made = [(c["call"], c["value"], c["pid"]) for c in settable_gpu.calls()[before:]]
    pid = os.getpid()
    assert made == [
        ("nvmlDeviceSetPowerManagementLimit", 300_000, pid),
        ("nvmlDeviceSetGpuLockedClocks", [1500, 1500], pid),
        ("nvmlDeviceSetMemoryLockedClocks", [1593, 1593], pid),
        ("nvmlDeviceSetPowerManagementLimit", 700_000, pid),
        ("nvmlDeviceResetGpuLockedClocks", None, pid),
        ("nvmlDeviceResetMemoryLockedClocks", None, pid),
    ]


@pytest.mark.parametrize("lag_reads", [1, 5])
def test_the_limit_read_back_waits_for_the_driver_to_enforce_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lag_reads: int
) -> None:
    # On an H100 the enforced limit read just after a set to 300 W still said 500 W: the
    # read-back waits (up to ENFORCE_WAIT_S) for the limit asked.
    for gpu in settable_gpu_at(monkeypatch, tmp_path, enforce_lag_reads=lag_reads):
        applied = apply(UUID, GpuSettings(power_limit_w=500))
        assert applied.power_limit_w == 500.0
        applied = apply(UUID, GpuSettings(power_limit_w=300))
        assert applied.power_limit_w == 300.0
        assert "enforce_lag" not in gpu.read()["devices"][UUID]  # every lagging read was made


def test_a_limit_never_enforced_is_read_back_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Past the wait, what the driver enforces is recorded, not what was asked.
    monkeypatch.setattr(gpu_settings, "ENFORCE_WAIT_S", 0.2)
    for _ in settable_gpu_at(monkeypatch, tmp_path, enforce_lag_reads=10_000):
        applied = apply(UUID, GpuSettings(power_limit_w=300))
        assert applied.power_limit_w == DEFAULT_LIMIT_W


def test_only_what_is_asked_is_touched(settable_gpu: SettableGpu) -> None:
    asked = GpuSettings(sm_clocks_mhz=1200)
    originals = read_originals(UUID, asked)
    assert originals == Originals(UUID, None, reset_sm_clocks=True)  # the limit: untouched
    apply(UUID, asked)
    restore(originals)
    calls = [c["call"] for c in settable_gpu.calls()]
    assert calls == ["nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks"]
    assert GpuSettings().empty and setting_problem(UUID, GpuSettings()) is None


def test_a_power_limit_outside_the_constraints_is_refused_with_the_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for gpu in settable_gpu_at(
        monkeypatch, tmp_path, power_limit_min_mw=100_000, power_limit_max_mw=750_000
    ):
        problem = setting_problem(UUID, GpuSettings(power_limit_w=800))
        assert problem == f"{UUID}: power limit 800 W is outside the allowed range 100-750 W"
        assert setting_problem(UUID, GpuSettings(power_limit_w=99.5)) is not None
        assert setting_problem(UUID, GpuSettings(power_limit_w=720)) is None  # above default
        clocks = setting_problem(UUID, GpuSettings(sm_clocks_mhz=2500))
        assert clocks == f"{UUID}: SM clocks 2500 MHz: the GPU allows 1-1980 MHz"
        with pytest.raises(GpuSettingsError, match="Invalid Argument"):
            apply(UUID, GpuSettings(power_limit_w=800))  # NVML refuses it too
        assert limit_now_w() == DEFAULT_LIMIT_W
        sets = [c for c in gpu.calls() if c["value"] != 700_000]  # all but the probes
        assert sets == []


def test_without_permission_setting_needs_root_and_nothing_changes(
    settable_gpu: SettableGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_NVML_REPLAY_REFUSE_SETS", "1")
    problem = setting_problem(UUID, GpuSettings(power_limit_w=300))
    assert problem is not None and problem.startswith("setting the power limit needs root")
    assert "Insufficient Permissions" in problem
    clocks = setting_problem(UUID, GpuSettings(sm_clocks_mhz=1500))
    assert clocks is not None and clocks.startswith("setting locked clocks needs root")
    with pytest.raises(GpuSettingsError) as refused:
        apply(UUID, GpuSettings(power_limit_w=300))
    assert isinstance(refused.value, BadInput)  # one line, exit 2
    assert str(refused.value) == (
        f"{UUID}: cannot set the power limit to 300 W: needs root (NVML: Insufficient Permissions)"
    )
    assert limit_now_w() == DEFAULT_LIMIT_W and settable_gpu.calls() == []
    assert setting_problem("GPU-absent", GpuSettings(power_limit_w=300)) == (
        "GPU-absent: NVML does not know this GPU (Not Found)"
    )


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env}, check=True,
    )  # fmt: skip
    return done.stdout.strip()


SET_IN_A_CHILD = f"""
import os
from lem.protocol.devices.gpu_settings import GpuSettings, apply
apply({UUID!r}, GpuSettings(power_limit_w=250))
print(os.getpid())
"""
READ_IN_A_CHILD = """
from lem.protocol.devices.nvml import inventory
print(inventory().gpus[0].power_limit_w)
"""


def test_what_one_process_sets_another_reads_and_a_third_restores(
    settable_gpu: SettableGpu,
) -> None:
    child = int(_python(SET_IN_A_CHILD, settable_gpu.env()))
    assert child != os.getpid()
    assert limit_now_w() == 250.0  # set there, read here
    [call] = settable_gpu.calls()
    assert call == {"call": "nvmlDeviceSetPowerManagementLimit", "uuid": UUID,
                    "value": 250_000, "pid": child}  # fmt: skip
    restore(Originals(UUID, DEFAULT_LIMIT_W))  # restored here, read in another child
    assert _python(READ_IN_A_CHILD, settable_gpu.env()) == str(DEFAULT_LIMIT_W)


def test_without_a_state_file_settings_stay_in_the_process(
    settable_gpu: SettableGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEM_NVML_REPLAY_STATE")
    apply(UUID, GpuSettings(power_limit_w=400))
    assert limit_now_w() == 400.0
    assert not settable_gpu.state.exists()
    env = {"LEM_NVML_REPLAY": str(settable_gpu.trace), "LEM_NVML_REPLAY_STATE": ""}
    assert _python(READ_IN_A_CHILD, env) == str(DEFAULT_LIMIT_W)


def exited_pid() -> int:
    """The pid of a child that has exited (and been reaped): no process has it now."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_ledger_keeps_the_first_originals_and_knows_dead_owners(tmp_path: Path) -> None:
    ledger = SettingsLedger(tmp_path / "store" / "gpu-settings.json")  # folder made
    assert ledger.entries() == [] and ledger.leftovers() == []
    dead = exited_pid()
    first = Originals(UUID, 700.0)
    ledger.record([first, Originals("GPU-other", 450.0)], dead)
    ledger.record([Originals(UUID, 300.0, reset_sm_clocks=True)], os.getpid())  # a 2nd apply
    assert ledger.entries() == [
        (Originals(UUID, 700.0, reset_sm_clocks=True), os.getpid()),  # 700 W, the first
        (Originals("GPU-other", 450.0), dead),
    ]
    assert ledger.leftovers() == [Originals("GPU-other", 450.0)]  # its owner is gone
    ledger.clear([UUID])
    assert [o.uuid for o, _ in ledger.entries()] == ["GPU-other"]
    ledger.clear(["GPU-other"])
    assert not ledger.path.exists()  # nothing left: no file


def test_the_ledger_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SettingsLedger(tmp_path / "gpu-settings.json")
    ledger.record([Originals(UUID, 700.0)], os.getpid())
    written = ledger.path.read_bytes()
    inode = ledger.path.stat().st_ino
    assert json.loads(written)["entries"][0]["power_limit_w"] == 700.0

    def torn(value: object, out: object, **_: object) -> None:
        out.write('{"entries": [')  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(state_file.json, "dump", torn)
        with pytest.raises(GpuSettingsError, match="cannot write the GPU-settings ledger"):
            ledger.record([Originals("GPU-other", 450.0)], os.getpid())
    assert ledger.path.read_bytes() == written  # the old ledger, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-settings.json"]  # no temp file
    ledger.record([Originals("GPU-other", 450.0)], os.getpid())
    assert ledger.path.stat().st_ino != inode  # a new file renamed over the old one


def test_the_ledger_never_replaces_what_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    (tmp_path / "gpu-settings.json").symlink_to(target)
    ledger = SettingsLedger(tmp_path / "gpu-settings.json")
    with pytest.raises(GpuSettingsError, match="not a regular file"):
        ledger.record([Originals(UUID, 700.0)], os.getpid())
    with pytest.raises(GpuSettingsError, match="not a regular file"):
        ledger.entries()
    assert target.read_text() == "keep" and (tmp_path / "gpu-settings.json").is_symlink()


def test_a_damaged_ledger_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gpu-settings.json"
    path.write_text('{"entries": [{"uuid": 3}]}')
    with pytest.raises(GpuSettingsError, match="not a GPU-settings ledger lem can use"):
        SettingsLedger(path).leftovers()


def test_leftovers_of_a_dead_lem_are_restored_and_cleared(
    settable_gpu: SettableGpu, tmp_path: Path
) -> None:
    ledger = SettingsLedger(tmp_path / "store" / gpu_settings.LEDGER_NAME)
    asked = GpuSettings(power_limit_w=300, sm_clocks_mhz=1500)
    dead = exited_pid()
    ledger.record([read_originals(UUID, asked), Originals("GPU-gone", 400.0)], dead)
    ledger.record([Originals("GPU-mine", 400.0)], os.getpid())  # alive: not touched
    apply(UUID, asked)  # ... and the lem that did this died here
    lines = ledger.restore_leftovers()
    assert lines[0] == (
        f"{UUID}: restored (left by lem process {dead}, which is gone): "
        "power limit back to 700 W, SM clocks unlocked"
    )
    assert lines[1].startswith(f"GPU-gone: not restored (left by lem process {dead}")
    assert "NVML does not know this GPU" in lines[1] and str(ledger.path) in lines[1]
    assert limit_now_w() == DEFAULT_LIMIT_W
    assert "sm_locked_mhz" not in settable_gpu.read()["devices"][UUID]
    assert [o.uuid for o, _ in ledger.entries()] == ["GPU-gone", "GPU-mine"]
    assert [line.split(":")[0] for line in ledger.restore_leftovers()] == ["GPU-gone"]
