"""What each NVML query costs a host-bound CUDA loop running in another process.

The telemetry sidecar is its own CUDA-free process; can its NVML queries still slow a CUDA
loop in another process (a driver lock taken by the ~3 ms energy-counter query, say)? One
process (this one) runs a launch-bound CUDA loop: bursts of tiny kernels, each burst ended by
a device synchronisation, like a decode step. In alternate windows (ABBA pairs per query
kind), a querier process (this script with ``--querier KIND``, which never imports torch)
issues one query kind at ``--rate-hz`` on the same GPU. Prints one JSON line per kind: the
paired median of (with / without) burst rate, and the query's own latency (median and p90,
ms) while the loop ran.

    python benchmarks/nvml_query_cost.py --window-s 3 --pairs 4

Needs a CUDA GPU, torch and nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

KINDS = (
    "power", "energy", "sm_clock", "mem_clock", "temperature", "utilization", "memory",
    "throttle", "pids", "sidecar_tick", "sidecar_tick_with_energy",
)  # fmt: skip


def queries(nv: Any, handle: Any) -> dict[str, Callable[[], object]]:
    """One callable per query kind; the ``sidecar_tick`` kinds read what one sidecar tick
    reads (see lem.workers.metering.sampler)."""
    throttle = (
        getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        or nv.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    single: dict[str, Callable[[], object]] = {
        "power": lambda: nv.nvmlDeviceGetPowerUsage(handle),
        "energy": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle),
        "sm_clock": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM),
        "mem_clock": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_MEM),
        "temperature": lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU),
        "utilization": lambda: nv.nvmlDeviceGetUtilizationRates(handle),
        "memory": lambda: nv.nvmlDeviceGetMemoryInfo(handle),
        "throttle": lambda: throttle(handle),
        "pids": lambda: nv.nvmlDeviceGetComputeRunningProcesses(handle),
    }
    tick = [single[k] for k in KINDS[:8] if k != "energy"]
    single["sidecar_tick"] = lambda: [read() for read in tick]
    single["sidecar_tick_with_energy"] = lambda: [read() for read in (*tick, single["energy"])]
    return single


def querier(kind: str, rate_hz: float) -> None:
    """Issue ``kind`` at ``rate_hz`` until SIGTERM; print its latencies (ms) as JSON."""
    import pynvml as nv

    nv.nvmlInit()
    read = queries(nv, nv.nvmlDeviceGetHandleByIndex(0))[kind]
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    latencies_ms: list[float] = []
    print("ready", flush=True)
    next_s = time.monotonic()
    while not stop:
        start_s = time.perf_counter()
        read()
        latencies_ms.append((time.perf_counter() - start_s) * 1000.0)
        next_s += 1.0 / rate_hz
        time.sleep(max(next_s - time.monotonic(), 0.0))
    print(json.dumps(latencies_ms), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--querier", choices=KINDS)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--kernels-per-burst", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    if args.querier:
        querier(args.querier, args.rate_hz)
        return
    import torch

    x = torch.ones(1024, device="cuda")

    def rate_hz(window_s: float) -> float:
        """Bursts per second over ``window_s`` s, each burst ended by a device sync."""
        torch.cuda.synchronize()
        start_s, count = time.perf_counter(), 0
        while time.perf_counter() - start_s < window_s:
            for _ in range(args.kernels_per_burst // 2):
                x.mul_(0.5).add_(0.5)
            torch.cuda.synchronize()
            count += 1
        return count / (time.perf_counter() - start_s)

    rate_hz(5.0)  # clocks and power up to their steady state
    for kind in args.kinds:
        on: list[float] = []
        off: list[float] = []
        latencies_ms: list[float] = []
        for pair in range(args.pairs):
            for with_querier in (True, False) if pair % 2 == 0 else (False, True):
                if not with_querier:
                    off.append(rate_hz(args.window_s))
                    continue
                child = subprocess.Popen(
                    [sys.executable, __file__, "--querier", kind, "--rate-hz", str(args.rate_hz)],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert child.stdout is not None
                child.stdout.readline()  # "ready"
                on.append(rate_hz(args.window_s))
                child.send_signal(signal.SIGTERM)
                latencies_ms += json.loads(child.stdout.readline())
                child.wait()
        latencies_ms.sort()
        print(
            json.dumps(
                {
                    "kind": kind,
                    "rate_hz": args.rate_hz,
                    "pairs": args.pairs,
                    "burst_ms_off": round(1000.0 / statistics.median(off), 3),
                    "on_over_off_paired_median": round(
                        statistics.median(a / b for a, b in zip(on, off, strict=True)), 5
                    ),
                    "query_ms_median": round(statistics.median(latencies_ms), 4),
                    "query_ms_p90": round(latencies_ms[int(0.9 * (len(latencies_ms) - 1))], 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
