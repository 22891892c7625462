"""``lem doctor`` on GPU settings (issue 19): per GPU, whether its power limit and locked
clocks can be set here and within what, or why not; the settings a lem that is gone left
changed, shown, and restored only with ``--restore-gpu-settings``."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from rich.console import Console

from lem.coordinator.cli import doctor
from lem.coordinator.cli.doctor_gpu import render_gpu_settings, settable_line
from lem.coordinator.cli.main import main
from lem.protocol.devices.gpu_settings import (
    GpuSettings,
    SettingsLedger,
    apply,
    ledger_beside,
    read_originals,
)
from lem.protocol.devices.nvml import inventory
from tests.settable_gpu import UUID, SettableGpu, settable_gpu, settable_gpu_at
from tests.test_gpu_settings import exited_pid, limit_now_w

__all__ = ["settable_gpu"]  # the fixture


def test_each_gpu_says_whether_its_settings_can_be_set_here(
    settable_gpu: SettableGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    [gpu] = inventory().gpus
    assert settable_line(gpu) == (
        f"GPU 0 ({UUID}): power limit can be set here: 200-700 W (now 700 W); "
        "locked clocks up to 1980 MHz SM, 2619 MHz memory"
    )
    apply(UUID, GpuSettings(power_limit_w=450))
    assert "(now 450 W)" in settable_line(gpu)  # read now, not from the inventory
    monkeypatch.setenv("LEM_NVML_REPLAY_REFUSE_SETS", "1")  # as without root
    out = io.StringIO()
    render_gpu_settings(Console(file=out, width=80), [gpu])  # one line however narrow
    assert out.getvalue() == (
        f"GPU 0 ({UUID}): power limit and locked clocks cannot be set here: setting the "
        f"power limit needs root (NVML refused it on {UUID}: Insufficient Permissions)\n"
    )


def test_a_gpu_without_power_limits_or_unknown_to_nvml_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for _ in settable_gpu_at(monkeypatch, tmp_path, power_limit_mw=None):
        [gpu] = inventory().gpus
        assert settable_line(gpu) == (
            f"GPU 0 ({UUID}): the power limit cannot be set: this GPU does not support it"
        )
        lost = msgspec.structs.replace(gpu, uuid="GPU-absent")
        assert settable_line(lost) == (
            "GPU 0 (GPU-absent): GPU settings unknown: GPU-absent: NVML does not know this "
            "GPU (Not Found)"
        )


def _doctor(store: Path, *flags: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    def probe(backend: str, timeout_s: float = 120.0, env: Any = None) -> dict[str, object]:
        return {"usable": True, "problem": "", "python_executable": f"/py/{backend}"}

    monkeypatch.setattr(doctor, "probe_backend", probe)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(main, ["doctor", "--store", str(store), *flags])


def test_doctor_shows_leftovers_and_restores_them_only_when_asked(
    settable_gpu: SettableGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "results" / "lem.db"
    ledger = SettingsLedger(ledger_beside(store))
    asked = GpuSettings(power_limit_w=300, sm_clocks_mhz=1500)
    dead = exited_pid()
    ledger.record([read_originals(UUID, asked)], dead)
    apply(UUID, asked)  # the lem that did this is gone
    kept = ledger.path.read_bytes()
    shown = _doctor(store, monkeypatch=monkeypatch)
    assert shown.exit_code == 0, shown.output
    assert f"GPU settings left changed by a lem that is gone ({ledger.path}):" in shown.output
    assert f"  {UUID}: to restore: power limit back to 700 W, SM clocks unlocked" in shown.output
    assert f"restore them with: lem doctor --restore-gpu-settings --store {store}" in shown.output
    assert limit_now_w() == 300.0 and ledger.path.read_bytes() == kept  # nothing changed
    restored = _doctor(store, "--restore-gpu-settings", monkeypatch=monkeypatch)
    assert restored.exit_code == 0, restored.output
    assert (
        f"GPU settings: {UUID}: restored (left by lem process {dead}, which is gone): "
        "power limit back to 700 W, SM clocks unlocked"
    ) in restored.output
    assert "(now 700 W)" in restored.output  # the GPUs are described after the restore
    assert limit_now_w() == 700.0 and not ledger.path.exists()
    again = _doctor(store, "--restore-gpu-settings", monkeypatch=monkeypatch)
    assert f"GPU settings: nothing left to restore ({ledger.path})" in again.output


def test_doctor_leaves_a_running_lems_settings_and_fails_on_one_it_cannot_restore(
    settable_gpu: SettableGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "lem.db"
    ledger = SettingsLedger(ledger_beside(store))
    ledger.record([read_originals(UUID, GpuSettings(power_limit_w=300))], os.getpid())
    ledger.record([read_originals(UUID, GpuSettings(power_limit_w=300))], os.getpid())
    apply(UUID, GpuSettings(power_limit_w=300))
    done = _doctor(store, "--restore-gpu-settings", monkeypatch=monkeypatch)
    assert "GPU settings: nothing left to restore" in done.output
    running = _doctor(store, monkeypatch=monkeypatch)
    assert f"1 GPU(s) changed by lem processes still running or on another host (pids " \
        f"{os.getpid()})" in running.output  # fmt: skip
    assert limit_now_w() == 300.0 and len(ledger.entries()) == 1
    ledger.record([read_originals("GPU-gone", GpuSettings())], exited_pid())  # not here
    failed = _doctor(store, "--restore-gpu-settings", monkeypatch=monkeypatch)
    assert failed.exit_code == 1 and "GPU-gone: not restored" in failed.output
