"""Record a real NVML trace on a GPU machine, for replay in GPU-less tests.

Reads GPU 0's total-energy counter (mJ) and power (mW) back to back, plus the clocks,
temperature and compute processes every ``--slow-every`` reads, first with the GPU idle
and then while a child process keeps it busy with bf16 matrix products. Writes one JSON
object a line: ``{"phase", "t_s", "energy_mj", "power_mw", ...}``.

    python benchmarks/record_nvml_trace.py --idle-s 5 --load-s 5 -o trace.jsonl

Status: written for the measurement issue and not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pynvml

LOAD = (
    "import time, torch\n"
    "a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)\n"
    "end = time.time() + float(__import__('sys').argv[1])\n"
    "while time.time() < end:\n"
    "    a @ a\n"
    "    torch.cuda.synchronize()\n"
)


def slow_fields(nv: Any, handle: Any) -> dict[str, Any]:
    processes = nv.nvmlDeviceGetComputeRunningProcesses(handle)
    return {
        "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM),
        "temperature_c": nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU),
        "processes": [{"pid": p.pid, "used_memory_bytes": p.usedGpuMemory} for p in processes],
    }


def record(phase: str, seconds: float, handle: Any, slow_every: int, out: Any) -> int:
    count = 0
    end_s = time.perf_counter() + seconds
    while (now_s := time.perf_counter()) < end_s:
        row: dict[str, Any] = {
            "phase": phase,
            "t_s": round(now_s, 6),
            "energy_mj": pynvml.nvmlDeviceGetTotalEnergyConsumption(handle),
            "power_mw": pynvml.nvmlDeviceGetPowerUsage(handle),
        }
        if count % slow_every == 0:
            row.update(slow_fields(pynvml, handle))
        out.write(json.dumps(row) + "\n")
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--load-s", type=float, default=5.0)
    parser.add_argument("--slow-every", type=int, default=25)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with args.output.open("w") as out:
        out.write(
            json.dumps(
                {
                    "gpu": pynvml.nvmlDeviceGetName(handle),
                    "driver": pynvml.nvmlSystemGetDriverVersion(),
                }
            )
            + "\n"
        )
        idle = record("idle", args.idle_s, handle, args.slow_every, out)
        load = subprocess.Popen([sys.executable, "-c", LOAD, str(args.load_s + 3)])
        time.sleep(2.0)  # let the load start before recording it
        busy = record("load", args.load_s, handle, args.slow_every, out)
        load.wait()
    print(json.dumps({"idle_reads": idle, "load_reads": busy, "output": str(args.output)}))


if __name__ == "__main__":
    main()
