"""Power-limit sweeps leave every GPU as they found it (issue 19): a replayed H100 whose
settings a file shares between processes records every NVML set call; the campaign runs on
the sleep engine. Each path — a normal end, Ctrl-C, a worker killed with SIGKILL, the
coordinator killed with SIGKILL then the next start — ends at the original 700 W."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from lem.coordinator.report.gather import read_campaign
from lem.coordinator.report.page import write_report
from lem.coordinator.report.power import best_limit
from lem.coordinator.store.results_store import Store
from tests.settable_gpu import UUID, SettableGpu, settable_gpu

__all__ = ["settable_gpu"]  # the fixture

LEM = [sys.executable, "-m", "lem.coordinator", "--log-json"]
ORIGINAL_MW = 700_000


def campaign(tmp_path: Path, limits: list[int], window_s: float = 0.5) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(
        "name: limits\nexperiment:\n  model: {source: builtin, name: lem-tiny}\n"
        "  device: cuda\n  num_prompts: 2\n  output_tokens: 20\n  warmup_batches: 0\n"
        f"  min_window_s: {window_s}\n"
        "  idle_baseline: {enabled: false}\n  gpu: {settle_s: 0.1}\n"
        f"grid: {{gpu.power_limit_w: {limits}}}\ncycles: 1\nmax_attempts: 2\n"
    )
    return path


def env(gpu: SettableGpu, **extra: str) -> dict[str, str]:
    return {**os.environ, **gpu.env(),
            "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend", **extra}  # fmt: skip


def limit_mw(gpu: SettableGpu) -> int:
    return int(gpu.read()["devices"].get(UUID, {}).get("power_limit_mw", ORIGINAL_MW))


def sets(gpu: SettableGpu) -> list[int]:
    return [c["value"] for c in gpu.calls() if c["call"] == "nvmlDeviceSetPowerManagementLimit"]


def recorded_limits(db: Path) -> list[float]:
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT payload_json FROM measurements WHERE status = 'ok' ORDER BY id")
        return [json.loads(r[0])["environment"]["gpus"][0]["power_limit_w"] for r in rows]


def start(path: Path, db: Path, gpu: SettableGpu) -> subprocess.Popen[str]:
    return subprocess.Popen([*LEM, "campaign", str(path), "--store", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env(gpu))  # fmt: skip


def events(proc: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("{"):
            yield json.loads(line)


def until(proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
    for found in events(proc):
        if found.get("event") == event:
            return found
    raise AssertionError(f"no {event!r} before the end")


def test_a_sweep_sets_each_limit_records_it_and_restores_the_original(
    settable_gpu: SettableGpu,
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    done = subprocess.run([*LEM, "campaign", str(campaign(tmp_path, [400, 300])),
                           "--store", str(db)], capture_output=True, text=True, timeout=120,
                          env=env(settable_gpu))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert recorded_limits(db) == [400.0, 300.0]  # what the device reported in each window
    # a permission probe per limit asked (the limit in force set back), then each limit in
    # turn with the original between them and at the end
    probes = [ORIGINAL_MW, ORIGINAL_MW]
    assert sets(settable_gpu) == [*probes, 400_000, ORIGINAL_MW, 300_000, ORIGINAL_MW]
    assert limit_mw(settable_gpu) == ORIGINAL_MW
    assert not (tmp_path / "gpu-settings.json").exists()  # the ledger is emptied
    # the report draws J/token, tok/s and TTFT against the limit and names the cheapest
    [campaign_id] = [c.id for c in Store.read_only(db).list_campaigns()]
    data = read_campaign(db, campaign_id)
    found = best_limit(data, data.rows)
    assert found is not None
    row, limit_w, judged = found
    assert limit_w in (300.0, 400.0) and not judged  # no SLO in this campaign
    assert row.mean_energy_per_output_token_j == min(
        r.mean_energy_per_output_token_j or 0.0 for r in data.rows
    )
    write_report(db, campaign_id, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="power"' in page and "lowest-energy limit (no SLO set" in page


def test_ctrl_c_restores_the_original(settable_gpu: SettableGpu, tmp_path: Path) -> None:
    proc = start(campaign(tmp_path, [400], window_s=30), tmp_path / "lem.db", settable_gpu)
    try:
        until(proc, "measuring")
        assert limit_mw(settable_gpu) == 400_000
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert limit_mw(settable_gpu) == ORIGINAL_MW


def test_a_killed_worker_is_retried_and_the_original_restored(
    settable_gpu: SettableGpu,
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    proc = start(campaign(tmp_path, [400], window_s=3), db, settable_gpu)
    try:
        ready = until(proc, "worker ready")
        until(proc, "measuring")
        os.kill(int(ready["pid"]), signal.SIGKILL)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert recorded_limits(db) == [400.0]  # the retry ran at the asked limit
    assert limit_mw(settable_gpu) == ORIGINAL_MW


def test_a_killed_coordinators_limit_is_restored_at_the_next_start(
    settable_gpu: SettableGpu,
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    proc = start(campaign(tmp_path, [300], window_s=30), db, settable_gpu)
    try:
        until(proc, "measuring")
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    psutil.wait_procs([], timeout=0)
    assert limit_mw(settable_gpu) == 300_000  # nobody was left to give it back
    ledger = json.loads((tmp_path / "gpu-settings.json").read_text())
    assert UUID in json.dumps(ledger)
    # the next lem start on that store gives it back before anything else
    done = subprocess.run([*LEM, "campaign", str(campaign(tmp_path, [400])), "--store",
                           str(db)], capture_output=True, text=True, timeout=120,
                          env=env(settable_gpu))  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the first run's probe and limit; the second start: the leftover restored first, then
    # its own probe, its limit and the original
    assert sets(settable_gpu) == [ORIGINAL_MW, 300_000, ORIGINAL_MW, ORIGINAL_MW, 400_000,
                                  ORIGINAL_MW]  # fmt: skip
    assert "restored" in done.stderr and UUID in done.stderr
    assert limit_mw(settable_gpu) == ORIGINAL_MW


def test_a_limit_the_gpu_refuses_is_one_line_before_anything_runs(
    settable_gpu: SettableGpu,
    tmp_path: Path,
) -> None:
    db = tmp_path / "store" / "lem.db"
    done = subprocess.run([*LEM, "campaign", str(campaign(tmp_path, [400])), "--store",
                           str(db)], capture_output=True, text=True, timeout=60,
                          env=env(settable_gpu, LEM_NVML_REPLAY_REFUSE_SETS="1"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "gpu.power_limit_w" in done.stderr
    assert "root" in done.stderr and not db.parent.exists()
    assert sets(settable_gpu) == [] and limit_mw(settable_gpu) == ORIGINAL_MW  # refused
