"""Write tests/data/store-v4/: a results store, worker journals and what lem printed for
them, all made by lem at main 13730d2 (store schema version 4, flat Measurement payloads).

Run once, at that commit, from the repository root:

    PYTHONPATH=.mypy-src .venv/bin/python -m tests.data.make_v4_store

Real campaigns through the CLI: the sleep backend on a replayed two-GPU NVML (energy, idle
baselines, prefill/decode split, carbon, telemetry), a data-parallel one (shards merged), the
builtin lem-tiny model on PyTorch CPU with token timing and an SLO (latency, requests,
goodput); and two synthetic campaigns through ``Store`` (a failed cycle, an engine lock, a
cycle without energy) that ``lem compare`` can match.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lem.coordinator.store.results_store import Store
from lem.protocol.results import EngineLock
from tests.report_stores import SLEEP_BACKEND, write_varying_trace
from tests.synthetic_results import add_campaign, config

OUT = Path(__file__).parent / "store-v4"
GPU_LIKE = """\
name: gpu-like
experiment:
  device: cuda
  gpu_count: 1
  model: {source: builtin, name: lem-tiny}
  input_tokens: 4
  output_tokens: 20
  num_prompts: 2
  warmup_batches: 1
  min_window_s: 0.6
  measure_prefill: true
  grid_intensity_g_per_kwh: 400
  idle_baseline: {window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}
grid:
  batch_size: [1, 2]
cycles: 2
"""
DATA_PARALLEL = """\
name: data-parallel
experiment:
  device: cuda
  gpu_count: 2
  pytorch: {multi_gpu: data}
  model: {source: builtin, name: lem-tiny}
  input_tokens: 4
  output_tokens: 20
  num_prompts: 5
  batch_size: 1
  warmup_batches: 0
  min_window_s: 0.5
  idle_baseline: {window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}
cycles: 2
"""
CPU_LATENCY = """\
name: cpu-latency
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 8
  output_tokens: 8
  num_prompts: 4
  warmup_batches: 0
  min_window_s: 0.2
  warmup: {until_cv: 0.5, window: 2, max_batches: 20}
  workload: {token_timing: true}
  slo: {ttft_ms: 50, tpot_ms: 20}
grid:
  batch_size: [1, 4]
cycles: 2
"""


def lem(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    work = OUT / "work"
    work.mkdir(parents=True)
    db = work / "lem.db"
    trace = write_varying_trace(work / "trace.jsonl")
    replay = {"LEM_WORKER_BACKEND": SLEEP_BACKEND, "LEM_NVML_REPLAY": str(trace)}
    for name, text, env in (
        ("gpu-like", GPU_LIKE, replay),
        ("data-parallel", DATA_PARALLEL, replay),
        ("cpu-latency", CPU_LATENCY, {}),
    ):
        source = work / f"{name}.yaml"
        source.write_text(text)
        lem("campaign", str(source), "--store", str(db), env=env)
    lock = EngineLock(name="pytorch-cpu", sha256="ab" * 32, made_from=True, matches=True)
    with Store(db) as store:
        configs = [config(1), config(4)]
        add_campaign(
            store, "synthetic-a", configs, [[0.5, 0.52, None], [0.3, 0.31, 0.29]],
            failed_cycles=[(0, 2)], engine_lock=lock,
        )  # fmt: skip
        add_campaign(store, "synthetic-b", configs, [[0.4, 0.41, 0.42], [0.3, 0.33, 0.3]])
        campaigns = [c.id for c in store.list_campaigns()]
    shutil.copy(db, OUT / "lem.db")  # the WAL is checkpointed on close
    journals = OUT / "journals"
    journals.mkdir()
    for i, path in enumerate(sorted((work / "runs").glob("*/journals/*.jsonl"))):
        shutil.copy(path, journals / f"{i}-{path.name}")
    stored = str(OUT / "lem.db")
    expected = OUT / "expected"
    expected.mkdir()
    for level in ("measurement", "experiment"):
        out = lem("results", "export", "--store", stored, "--level", level, "--format", "json")
        (expected / f"export-{level}.json").write_text(out)
    (expected / "list.txt").write_text(lem("results", "list", "--store", stored))
    for i, campaign_id in enumerate(campaigns):
        show = lem("results", "show", campaign_id, "--store", stored)
        (expected / f"show-{i}.txt").write_text(show)
    compare = lem("compare", campaigns[3], campaigns[4], "--store", stored, "--json")
    (expected / "compare.json").write_text(compare)
    (expected / "campaigns.txt").write_text("\n".join(campaigns) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
