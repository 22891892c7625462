"""Real campaigns for the report's tests, run through the CLI on CPU: one with the sleep
backend on a replayed two-GPU NVML (energy, flags and telemetry, no latency), one with the
builtin lem-tiny model on the PyTorch backend (token timings, no GPU energy)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from lem.coordinator.store.results_store import Store
from lem.protocol.devices.nvml_replay import H100_CLOCKS_MHZ

SLEEP_BACKEND = "lem.workers.engines.sleep:SleepBackend"
UUIDS = ("GPU-replay-rpt-0", "GPU-replay-rpt-1")
# The name is escaped everywhere it is shown: a raw "<b>" in the page is a bug.
TRICKY_NAME = 'report <b>check</b> & "quotes"'
GPU_LIKE = """\
name: '{name}'
experiment:
  device: cuda
  gpu_count: 1
  model: {{source: builtin, name: lem-tiny}}
  input_tokens: 4
  output_tokens: 20
  num_prompts: 2
  warmup_batches: 0
  min_window_s: 0.6
  idle_baseline: {{window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}}
grid:
  batch_size: [1, 2]
cycles: 2
"""
CPU = """\
name: cpu-report
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 8
  output_tokens: 8
  num_prompts: 4
  warmup_batches: 0
  min_window_s: 0.2
  workload: {token_timing: true}
grid:
  batch_size: [1, 4]
cycles: 2
"""


def write_varying_trace(path: Path) -> Path:
    """A synthetic two-GPU trace whose power swings 70–130 W and whose temperature climbs
    40–49 °C over 10 s (then loops), so that timelines have shape; one device reports a
    700 W power limit, the other none."""
    header = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "driver": "580.95.05",
        "cuda_driver_version": 13000,
        "synthetic": True,
        "synthetic_because": "lem report tests on CPU",
        "devices": [
            {"uuid": UUIDS[0], "name": "NVIDIA H100 80GB HBM3", "power_limit_mw": 700_000},
            {"uuid": UUIDS[1], "name": "NVIDIA H100 80GB HBM3"},
        ],
    }
    rows, energy_mj = [], [0.0, 0.0]
    for i in range(100):
        t_s = round(i / 10, 1)
        for device in (0, 1):
            power_mw = 100_000 + 30_000 * math.sin(t_s * 2 + device)
            energy_mj[device] += power_mw * 0.1
            rows.append({
                "t_s": t_s, "device": device, "energy_mj": int(energy_mj[device]),
                "power_mw": int(power_mw), "temperature_c": 40 + int(t_s) + device,
                "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, **H100_CLOCKS_MHZ,
            })  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path


def run_campaign(folder: Path, text: str, env: dict[str, str]) -> tuple[Path, str]:
    """Run the campaign ``text`` with ``lem campaign`` into ``folder/lem.db``; the store and
    the campaign's id."""
    folder.mkdir(parents=True, exist_ok=True)
    source, db = folder / "campaign.yaml", folder / "lem.db"
    source.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(source), "--store", str(db)],
        capture_output=True, text=True, timeout=240, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        [campaign] = store.list_campaigns()
    return db, campaign.id


def gpu_like_campaign(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    trace = write_varying_trace(folder / "trace.jsonl")
    env = {"LEM_WORKER_BACKEND": SLEEP_BACKEND, "LEM_NVML_REPLAY": str(trace)}
    return run_campaign(folder, GPU_LIKE.format(name=TRICKY_NAME.replace("'", "''")), env)


def cpu_campaign(folder: Path) -> tuple[Path, str]:
    return run_campaign(folder, CPU, {})


def lem_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "report", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
