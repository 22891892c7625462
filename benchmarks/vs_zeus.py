"""lem's energy windows against Zeus's ZeusMonitor and against integrated power, same windows.

On GPU 0 a bf16 matrix-product loop runs for each window length; around it, Zeus's
``begin_window``/``end_window`` and lem's ``EnergyWindow`` (after ``torch.cuda.synchronize``)
bracket the same work, while lem's telemetry sidecar samples power. Prints one JSON line
per window: lem J, Zeus J, their relative difference, lem's integrated-power J and the
counter-vs-power difference. Needs a CUDA GPU, torch, and the ``zeus`` package (its monitor
imports numpy, pandas, scikit-learn and nvidia-ml-py).

    python benchmarks/vs_zeus.py --window-s 2 10 40 --repeats 3

Status: written for the measurement issue and not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from zeus.monitor import ZeusMonitor

from lem.protocol.devices.nvml import EnergyCounters, inventory
from lem.workers.metering.energy import EnergyWindow
from lem.workers.metering.telemetry import Sampler


def busy(seconds: float, a: torch.Tensor) -> None:
    end_s = time.perf_counter() + seconds
    while time.perf_counter() < end_s:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-s", type=float, nargs="+", default=[2.0, 10.0, 40.0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    uuid = inventory().gpus[0].uuid
    counters = EnergyCounters([uuid])
    zeus = ZeusMonitor(gpu_indices=[0])
    sampler = Sampler([uuid], Path(tempfile.mkdtemp(prefix="lem-vs-zeus-")) / "t.db")
    sampler.start()
    sampler.ready()
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    busy(10.0, a)  # warm the clocks up
    try:
        for window_s in args.window_s:
            for repeat in range(args.repeats):
                window = EnergyWindow(counters, [uuid], None)
                torch.cuda.synchronize()
                zeus.begin_window("w")
                window.begin()
                begin_s = time.monotonic()
                busy(window_s, a)
                torch.cuda.synchronize()
                end_s = time.monotonic()
                window.end()
                zeus_j = zeus.end_window("w").gpu_energy[0]
                lem_j = window.result().energy_j
                [telemetry] = sampler.window(begin_s, end_s).per_gpu
                print(json.dumps({
                    "window_s": window_s, "repeat": repeat, "lem_j": lem_j, "zeus_j": zeus_j,
                    "lem_vs_zeus": (lem_j - zeus_j) / zeus_j if lem_j and zeus_j else None,
                    "integrated_power_j": telemetry.integrated_energy_j,
                    "counter_vs_power": telemetry.counter_vs_power_relative_diff,
                    "samples": telemetry.samples, "mean_power_w": telemetry.mean_power_w,
                }), flush=True)  # fmt: skip
    finally:
        sampler.stop()
        counters.close()


if __name__ == "__main__":
    main()
