"""What token timing costs: lem's measured window with ``workload.token_timing`` off and on,
for each token clock asked for (``--clocks``: ``loop``, lem's, and ``streamer``, the former).

One in-process PyTorch backend (the worker's own code, no coordinator), one loaded model;
for each batch size, windows go round the arms (off, then each clock) in an order that
reverses every round (off, loop, streamer, streamer, loop, off, …) for ``--rounds``
rounds after ``--warmup-windows`` unmeasured windows, each window lasting ``--window-s``
seconds. Prints one JSON line per batch size and clock: median throughput (output tok/s)
with that clock and without timing, the relative cost by medians and the median over
rounds of the paired ratio. Runs on CPU (``--device cpu``, one torch thread by default) or
CUDA.

``--samplers`` adds arms with timing off and the telemetry sidecar running during the window
(started before it, stopped after, as lem's worker runs it at 10 Hz): ``sampler`` reads the
energy counter every tick (~3 ms a query on an H100), ``sampler-no-energy`` never. On CUDA
only; they show what the sidecar costs the decode loop in the same process and windows.

    python benchmarks/token_timing_overhead.py --device cpu --batch-sizes 1 8 32
    python benchmarks/token_timing_overhead.py --device cuda --model llama-3.2-1b \
        --dtype bfloat16 --cache static --batch-sizes 32 --input-tokens 128 \
        --output-tokens 128 --window-s 10 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

from lem.protocol.config import ExperimentConfig, ModelConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.workload import WorkloadConfig
from lem.workers.engines.pytorch.engine import PyTorchBackend
from lem.workers.engines.pytorch.token_clock import ClockName
from lem.workers.metering.telemetry import Sampler

Arm = str | None  # None: timing off; a ClockName; or a sampler arm (timing off)
SAMPLER_ENERGY_INTERVAL_S = {"sampler": 0.1, "sampler-no-energy": 1e9}


class NoWindow:
    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass


def throughput(
    backend: PyTorchBackend,
    configs: dict[bool, ExperimentConfig],
    arm: Arm,
    window_s: float,
    gpus: list[str],
) -> float:
    """Output tokens per second of one measured window of ``arm``."""
    sampler = None
    if arm in SAMPLER_ENERGY_INTERVAL_S:
        db_path = Path(tempfile.mkdtemp(prefix="lem-timing-overhead-")) / "t.db"
        sampler = Sampler(gpus, db_path, energy_interval_s=SAMPLER_ENERGY_INTERVAL_S[arm])
        sampler.start()
        sampler.ready()
    elif arm is not None:
        backend.token_clock = cast(ClockName, arm)
    config = configs[arm is not None and sampler is None]
    try:
        stats = backend.run(config, NoWindow(), threading.Event(), lambda *_: None, window_s)
    finally:
        if sampler is not None:
            sampler.stop()
    return stats.output_tokens / stats.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="lem-tiny", help="lem-tiny or a random shape name")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument(
        "--clocks", nargs="*", default=["loop", "streamer"], choices=["loop", "streamer"]
    )
    parser.add_argument(
        "--samplers", nargs="*", default=[], choices=sorted(SAMPLER_ENERGY_INTERVAL_S)
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup-windows", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=float("inf"),
        help="start no new round after this many seconds (fewer rounds, still a result)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16"])
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static"])
    args = parser.parse_args()
    started_s = time.monotonic()
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    backend = PyTorchBackend()
    gpus: list[str] = []
    if args.device == "cuda":
        from lem.protocol.devices.nvml import inventory

        gpus = [inventory().gpus[0].uuid]
    backend.initialise(gpus)
    model = (
        ModelConfig(source="builtin", name="lem-tiny", dtype=args.dtype)
        if args.model == "lem-tiny"
        else ModelConfig(source="random", name=args.model, dtype=args.dtype)
    )
    for batch_size in args.batch_sizes:
        configs = {
            timing: ExperimentConfig(
                device=args.device,
                model=model,
                batch_size=batch_size,
                num_prompts=batch_size,
                input_tokens=args.input_tokens,
                output_tokens=args.output_tokens,
                warmup_batches=1,
                workload=WorkloadConfig(token_timing=timing),
                pytorch=PyTorchConfig(cache_implementation=args.cache),
            )
            for timing in (True, False)
        }
        arms: list[Arm] = [None, *args.clocks, *args.samplers]
        for i in range(args.warmup_windows):
            throughput(backend, configs, arms[i % len(arms)], args.window_s, gpus)
        rates: dict[Arm, list[float]] = {arm: [] for arm in arms}
        for round_index in range(args.rounds):
            over_budget = time.monotonic() - started_s > args.budget_s
            if over_budget and round_index >= 2 and round_index % 2 == 0:
                break  # stop after whole ABBA pairs of rounds
            for arm in arms if round_index % 2 == 0 else arms[::-1]:
                rates[arm].append(throughput(backend, configs, arm, args.window_s, gpus))
        off = statistics.median(rates[None])
        for clock in [*args.clocks, *args.samplers]:
            on = statistics.median(rates[clock])
            ratios = [a / b for a, b in zip(rates[clock], rates[None], strict=True)]
            paired = statistics.median(ratios)
            paired_se = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
            print(
                json.dumps(
                    {
                        "device": args.device,
                        "model": args.model,
                        "arm": clock,
                        "batch_size": batch_size,
                        "output_tokens": args.output_tokens,
                        "rounds": len(ratios),
                        "window_s": args.window_s,
                        "cache": args.cache,
                        "dtype": args.dtype,
                        "median_tok_per_s_timing_on": round(on, 1),
                        "median_tok_per_s_timing_off": round(off, 1),
                        "relative_cost": round(1 - on / off, 4),
                        "paired_on_over_off_median": round(paired, 5),
                        "paired_on_over_off_mean": round(statistics.fmean(ratios), 5),
                        "paired_on_over_off_mean_se": round(paired_se, 5),
                        "cv_on": round(statistics.stdev(rates[clock]) / on, 4),
                        "cv_off": round(statistics.stdev(rates[None]) / off, 4),
                        "paired_on_over_off": [
                            round(a / b, 4) for a, b in zip(rates[clock], rates[None], strict=True)
                        ],
                    }
                ),
                flush=True,
            )
    backend.close()


if __name__ == "__main__":
    main()
