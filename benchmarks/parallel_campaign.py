"""Wall time of one campaign run one experiment at a time and in parallel lanes.

Two one-GPU experiments × ``--cycles`` cycles, each measured window ``--window-s`` long, on
the sleep backend with a replayed two-GPU NVML (no GPU, no model: what is timed is lem's
own scheduling — worker start, idle baseline, windows — sequential vs two lanes). Prints
both wall times (s) and their ratio; the target is ≤ 0.6.

    PYTHONPATH=.mypy-src .venv/bin/python benchmarks/parallel_campaign.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lem.protocol.devices.nvml_replay import write_steady_trace

CAMPAIGN = """\
name: parallel-bench
experiment:
  device: cuda
  gpu_count: 1
  model: {{source: builtin, name: lem-tiny}}
  input_tokens: 4
  output_tokens: 50
  num_prompts: 2
  warmup_batches: 0
  min_window_s: {window_s}
  idle_baseline: {{window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}}
grid:
  batch_size: [1, 2]
cycles: {cycles}
"""


def wall_s(campaign: Path, store: Path, env: dict[str, str], *args: str) -> float:
    """Seconds one ``lem campaign`` takes, start to exit."""
    started_s = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "-q", "campaign", str(campaign),
         "--store", str(store), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"lem campaign {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-s", type=float, default=2.0, help="min_window_s (s)")
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lem-parallel-") as tmp:
        directory = Path(tmp)
        write_steady_trace(
            directory / "two_gpus.jsonl", ("GPU-bench-0", "GPU-bench-1"), "parallel benchmark"
        )
        campaign = directory / "campaign.yaml"
        campaign.write_text(CAMPAIGN.format(window_s=args.window_s, cycles=args.cycles))
        env = {
            **os.environ,
            "LEM_NVML_REPLAY": str(directory / "two_gpus.jsonl"),
            "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend",
        }
        sequential_s = wall_s(campaign, directory / "seq.db", env, "--max-parallel", "1")
        parallel_s = wall_s(campaign, directory / "par.db", env)
    print(f"2 experiments x {args.cycles} cycle(s), min_window_s {args.window_s:g} s")
    print(f"--max-parallel 1: {sequential_s:.2f} s")
    print(f"default (2 lanes): {parallel_s:.2f} s")
    print(f"ratio: {parallel_s / sequential_s:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
