"""What the telemetry sidecar costs in throughput: two lem workers, one sampling at the
default 10 Hz and one with telemetry off (``LEM_TELEMETRY_INTERVAL_S=0``), alternate
one-pass windows of the same experiment on the same GPU (ABBA pairs after a shared warmup).
Prints the paired median of (with / without) throughput; the measurement issue asks that
sampling change throughput by at most 0.5%.

    python benchmarks/sampler_overhead.py --pairs 10 --cache static --batch-size 32

Status: written for the measurement issue; exercised on CPU with a replayed NVML and the
sleep backend only, not yet on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from lem.coordinator.gpus import assign_gpus
from lem.coordinator.hub import Hub
from lem.coordinator.launcher import LocalProcessLauncher, WorkerSpec
from lem.coordinator.supervisor import Supervisor, WorkerHandle
from lem.protocol.config import ExperimentConfig, IdleBaselineConfig, ModelConfig, PyTorchConfig
from lem.protocol.messages import Run
from lem.protocol.results import Measurement
from lem.workers.nvml import inventory


def start(supervisor: Supervisor, hub: Hub, name: str, interval_s: str, tmp: Path) -> WorkerHandle:
    inv = inventory()
    assignment = assign_gpus("cuda", 1, inv.gpus, None, inv.unavailable_reason)
    os.environ["LEM_TELEMETRY_INTERVAL_S"] = interval_s  # the launcher passes LEM_* through
    spec = WorkerSpec(worker_id=name, backend="pytorch", endpoint=hub.endpoint,
                      assignment=assignment, journal_path=tmp / f"{name}.jsonl",
                      log_path=tmp / f"{name}.log", handshake_timeout_s=300)  # fmt: skip
    return supervisor.start_worker(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--warmup-windows", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-prompts", type=int, default=128)
    parser.add_argument("--cache", choices=["dynamic", "static"], default="static")
    parser.add_argument("--min-window-s", type=float, default=0.0, help="0: one pass a window")
    args = parser.parse_args()
    config = ExperimentConfig(
        device="cuda", batch_size=args.batch_size, num_prompts=args.num_prompts,
        input_tokens=128, output_tokens=128, warmup_batches=0, min_window_s=args.min_window_s,
        idle_baseline=IdleBaselineConfig(enabled=False),
        model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16"),
        pytorch=PyTorchConfig(cache_implementation=args.cache),
    )  # fmt: skip
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher(), handshake_timeout_s=300)
    tmp = Path(tempfile.mkdtemp(prefix="lem-sampler-overhead-"))
    workers = {"on": start(supervisor, hub, "on", "0.1", tmp),
               "off": start(supervisor, hub, "off", "0", tmp)}  # fmt: skip
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cycle = 0

    def window(name: str, keep: bool) -> None:
        nonlocal cycle
        cycle += 1
        outcome = supervisor.run(workers[name], Run(experiment_id=name, cycle=cycle, config=config))
        if not isinstance(outcome, Measurement):
            raise RuntimeError(f"{name}: {outcome}")
        if keep:
            rates[name].append(outcome.output_tokens_per_s)

    try:
        for _ in range(args.warmup_windows):
            window("on", False)
            window("off", False)
        for pair in range(args.pairs):
            for name in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                window(name, True)
    finally:
        supervisor.stop_all("benchmark done")
        hub.close()
    paired = [a / b for a, b in zip(rates["on"], rates["off"], strict=True)]
    print(json.dumps({
        "cache": args.cache, "batch_size": args.batch_size, "pairs": args.pairs,
        "min_window_s": args.min_window_s,
        "on_tok_per_s_median": statistics.median(rates["on"]),
        "off_tok_per_s_median": statistics.median(rates["off"]),
        "on_over_off_paired_median": statistics.median(paired),
        "on_tok_per_s": rates["on"], "off_tok_per_s": rates["off"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
