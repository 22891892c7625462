"""What the telemetry sidecar costs a GPU-bound or a launch-bound loop, resolved finely.

On decode (``token_timing_overhead.py --samplers``) the window-to-window noise on the device
VM (2–5%) hides a 0.5% effect. Here one process runs a fixed bf16 matrix-product
loop on GPU 0 in windows of ``--window-s`` seconds and counts products per second, with the
sampler sidecar (``lem.workers.metering.telemetry.Sampler``, default 10 Hz, energy counter at 10 Hz)
running in alternate windows (ABBA pairs, the sidecar started and ready before its window,
stopped after). It also reads the sidecar's CPU time over each "on" window (share of one
core). Prints one JSON line: the paired median of on/off throughput and the sidecar's CPU.
``--workload launch-bound`` replaces the matrix products by tiny element-wise kernels
launched from a Python loop: host-bound like eager decode (Python + kernel launches), but
without decode's window-to-window noise.

    python benchmarks/sampler_overhead_gpu_bound.py --pairs 10 --window-s 5
    python benchmarks/sampler_overhead_gpu_bound.py --workload launch-bound

Needs a CUDA GPU and torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from lem.protocol.devices.nvml import inventory
from lem.workers.metering.telemetry import Sampler


def kernels_per_s(burst: Callable[[], None], kernels_per_burst: int, window_s: float) -> float:
    """GPU kernels per second over ``window_s`` s: ``burst`` launches ``kernels_per_burst``
    of them, and the device is synchronised after each burst."""
    torch.cuda.synchronize()
    start_s = time.perf_counter()
    count = 0
    while time.perf_counter() - start_s < window_s:
        burst()
        torch.cuda.synchronize()
        count += kernels_per_burst
    return count / (time.perf_counter() - start_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--workload", choices=["matmul", "launch-bound"], default="matmul")
    args = parser.parse_args()
    uuid = inventory().gpus[0].uuid
    tmp = Path(tempfile.mkdtemp(prefix="lem-sampler-gpu-bound-"))
    if args.workload == "matmul":  # 10 bf16 matrix products a burst
        a = torch.randn(args.size, args.size, device="cuda", dtype=torch.bfloat16)

        def burst() -> None:
            for _ in range(10):
                a @ a

        per_burst = 10
    else:  # 200 tiny element-wise kernels a burst, launched from Python
        x = torch.ones(1024, device="cuda")

        def burst() -> None:
            for _ in range(100):
                x.mul_(0.5).add_(0.5)

        per_burst = 200

    def rate(window_s: float) -> float:
        return kernels_per_s(burst, per_burst, window_s)

    rate(10.0)  # clocks and power up to their steady state
    rates: dict[str, list[float]] = {"on": [], "off": []}
    sidecar_core_share: list[float] = []
    for pair in range(args.pairs):
        for name in ("on", "off") if pair % 2 == 0 else ("off", "on"):
            if name == "off":
                rates["off"].append(rate(args.window_s))
                continue
            sampler = Sampler([uuid], tmp / f"t{pair}.db")
            sampler.start()
            sampler.ready()
            assert sampler.process is not None
            sidecar = psutil.Process(sampler.process.pid)
            cpu_before_s = sum(sidecar.cpu_times()[:2])
            wall_before_s = time.perf_counter()
            rates["on"].append(rate(args.window_s))
            cpu_s = sum(sidecar.cpu_times()[:2]) - cpu_before_s
            sidecar_core_share.append(cpu_s / (time.perf_counter() - wall_before_s))
            sampler.stop()
    paired = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    print(
        json.dumps(
            {
                "gpu": inventory().gpus[0].name,
                "workload": args.workload,
                "size": args.size,
                "window_s": args.window_s,
                "pairs": args.pairs,
                "on_over_off_paired_median": round(statistics.median(paired), 5),
                "on_over_off_paired": [round(r, 5) for r in paired],
                "off_per_s_cv": round(
                    statistics.stdev(rates["off"]) / statistics.fmean(rates["off"]), 5
                ),
                "sidecar_core_share_median": round(statistics.median(sidecar_core_share), 4),
                "on_per_s": [round(r, 2) for r in rates["on"]],
                "off_per_s": [round(r, 2) for r in rates["off"]],
            }
        )
    )


if __name__ == "__main__":
    main()
