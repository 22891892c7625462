"""Campaign planning at scale: a 1,000,000-point grid (100 × 100 × 100 over cheap fields).

Measures, for ``lem campaign FILE --dry-run --show 1`` in a fresh process:
- ``first_experiment_s``: wall time from starting the process to its first listed
  experiment (interpreter start and imports included; target < 1 s);
- ``peak_rss_mib``: the process's peak resident set (``ru_maxrss``; target < 200 MiB);
for a real ``lem campaign FILE`` of the same grid (``--log-json``, the sleep backend so no
model loads, stopped with SIGINT once the first experiment ran):
- ``first_dispatch_s``: process start to the coordinator's ``campaign started`` line (planned,
  GPU requests checked, campaign stored; target < 1 s); ``first_phase_s``: to the worker's
  first phase event of the first experiment (a worker process started and connected);
- ``peak_rss_mib``: the peak resident set of the coordinator and its worker;
and, in this process, how fast points are produced one at a time (``points_per_s`` over
``--iterate`` points) and how long planning alone takes (``plan_s``). Prints JSON.

    python benchmarks/grid_expansion.py [--iterate 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAMPAIGN = """\
name: million
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 128
  output_tokens: 128
grid:
  batch_size: [%s]
  num_prompts: [%s]
  warmup_batches: [%s]
"""


def write_campaign(folder: Path, per_axis: int) -> Path:
    """A campaign of ``per_axis``³ points."""
    values = ", ".join(str(v) for v in range(1, per_axis + 1))
    path = folder / "million.yaml"
    path.write_text(CAMPAIGN % (values, values, values))
    return path


def dry_run(path: Path) -> dict[str, float | int | str]:
    """Time to the first listed experiment and peak RSS of ``lem campaign --dry-run``."""
    started_s = time.perf_counter()
    command = [sys.executable, "-m", "lem.coordinator", "campaign", str(path), "--dry-run"]
    child = subprocess.Popen([*command, "--show", "1"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    header = child.stdout.readline().strip()
    first = child.stdout.readline().strip()
    first_experiment_s = time.perf_counter() - started_s
    child.stdout.read()
    assert child.wait() == 0
    total_s = time.perf_counter() - started_s
    peak_rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {
        "header": header,
        "first_experiment": first,
        "first_experiment_s": round(first_experiment_s, 3),
        "process_total_s": round(total_s, 3),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
    }


def real_run(path: Path, folder: Path) -> dict[str, float | int | str]:
    """Time to the first dispatch and the first phase event of a real campaign run."""
    env = dict(os.environ, LEM_WORKER_BACKEND="lem.workers.engines.sleep:SleepBackend")
    command = [sys.executable, "-m", "lem.coordinator", "--log-json", "campaign", str(path)]
    started_s = time.perf_counter()
    child = subprocess.Popen(
        [*command, "--store", str(folder / "lem.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stderr is not None
    times_s: dict[str, float] = {}
    for line in child.stderr:
        event = json.loads(line).get("event", "") if line.startswith("{") else ""
        if event == "campaign started":
            times_s["first_dispatch_s"] = time.perf_counter() - started_s
        elif "first_dispatch_s" in times_s and event in ("baseline", "loading", "warmup"):
            times_s["first_phase_s"] = time.perf_counter() - started_s
            break
    child.send_signal(signal.SIGINT)
    child.stderr.read()
    code = child.wait(60)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        **{k: round(v, 3) for k, v in times_s.items()},
        "exit_status_after_sigint": code,
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
    }


def in_process(path: Path, iterate: int) -> dict[str, float | int]:
    """Planning time, one point far into the grid, and points produced per second."""
    from lem.coordinator.planning.campaign import plan_campaign

    started_s = time.perf_counter()
    plan = plan_campaign(path)
    plan_s = time.perf_counter() - started_s
    started_s = time.perf_counter()
    last = plan.experiments[len(plan.experiments) - 1]
    last_point_s = time.perf_counter() - started_s
    started_s = time.perf_counter()
    produced = 0
    for _ in plan.experiments:
        produced += 1
        if produced >= iterate:
            break
    iterate_s = time.perf_counter() - started_s
    return {
        "experiments": len(plan.experiments),
        "plan_s": round(plan_s, 3),
        "last_point_s": round(last_point_s, 6),
        "last_point_position": last.position,
        "iterated": produced,
        "points_per_s": round(produced / iterate_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-axis", type=int, default=100, help="values per axis (3 axes)")
    parser.add_argument("--iterate", type=int, default=10_000, help="points to produce")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = write_campaign(Path(folder), args.per_axis)
        result = {
            "dry_run": dry_run(path),
            "real_run": real_run(path, Path(folder)),
            "in_process": in_process(path, args.iterate),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
