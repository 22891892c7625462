"""What token timing costs: lem's measured window with ``workload.token_timing`` on and off.

One in-process PyTorch backend (the worker's own code, no coordinator), one loaded model;
for each batch size, windows alternate ABBA (timing on, off, off, on, …) for ``--pairs``
pairs after ``--warmup-windows`` unmeasured windows, each window lasting ``--window-s``
seconds. Prints one JSON line per batch size: median throughput (output tok/s) with and
without timing and the relative cost. Runs on CPU (``--device cpu``, one torch thread by
default) or CUDA.

    python benchmarks/token_timing_overhead.py --device cpu --batch-sizes 1 8 32
    python benchmarks/token_timing_overhead.py --device cuda --model llama-3.2-1b \
        --dtype bfloat16 --cache static --batch-sizes 32 --input-tokens 128 \
        --output-tokens 128 --window-s 10 --pairs 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading

from lem.protocol.config import ExperimentConfig, ModelConfig, PyTorchConfig
from lem.protocol.workload import WorkloadConfig
from lem.workers.pytorch.engine import PyTorchBackend


class NoWindow:
    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass


def throughput(backend: PyTorchBackend, config: ExperimentConfig, window_s: float) -> float:
    """Output tokens per second of one measured window of ``config``."""
    stats = backend.run(config, NoWindow(), threading.Event(), lambda *_: None, window_s)
    return stats.output_tokens / stats.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="lem-tiny", help="lem-tiny or a random shape name")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--warmup-windows", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16"])
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static"])
    args = parser.parse_args()
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    backend = PyTorchBackend()
    gpus: list[str] = []
    if args.device == "cuda":
        from lem.workers.nvml import inventory

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
        for i in range(args.warmup_windows):
            throughput(backend, configs[i % 2 == 0], args.window_s)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for pair in range(args.pairs):
            order = (True, False) if pair % 2 == 0 else (False, True)
            for timing in order:
                rates[timing].append(throughput(backend, configs[timing], args.window_s))
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        print(
            json.dumps(
                {
                    "device": args.device,
                    "model": args.model,
                    "batch_size": batch_size,
                    "output_tokens": args.output_tokens,
                    "pairs": args.pairs,
                    "window_s": args.window_s,
                    "median_tok_per_s_timing_on": round(on, 1),
                    "median_tok_per_s_timing_off": round(off, 1),
                    "relative_cost": round(1 - on / off, 4),
                    "cache": args.cache,
                    "dtype": args.dtype,
                    "paired_on_over_off_median": round(
                        statistics.median(
                            a / b for a, b in zip(rates[True], rates[False], strict=True)
                        ),
                        5,
                    ),
                    "cv_on": round(statistics.stdev(rates[True]) / on, 4),
                    "cv_off": round(statistics.stdev(rates[False]) / off, 4),
                }
            ),
            flush=True,
        )
    backend.close()


if __name__ == "__main__":
    main()
