"""Write the synthetic NVML traces in tests/data/ (made up, not recorded: each says so).

    python tests/data/make_traces.py

The NVML traces of tests/data/, and what each is:

- real: ``h100_idle.jsonl``, ``h100_load.jsonl`` — rows recorded on the H100 lent to lem,
  cut unchanged from ``h100_recorded.jsonl.gz`` by ``convert_recorded_trace.py``;
- derived: ``h100_load_no_counter.jsonl`` — the real load rows with the counter withheld;
- synthetic (this script): what that recording cannot show. Each header's
  ``"synthetic_because"`` says why: exact values for testing the replay itself and the
  sidecar fields the recorder does not record (``h100_like_idle_load``), a GPU without the
  counter, a process appearing mid-window, MIG enabled, a lost GPU.

Times are computed in integer microseconds and energies in integer millijoules, so the
output is byte-for-byte reproducible (``test_nvml_replay`` checks the committed files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
H100 = "NVIDIA H100 80GB HBM3"
H100_MEMORY_BYTES = 81_559 * 2**20
H100_UUID = "GPU-00000000-0000-0000-0000-0000000h1000"

# h100_like_idle_load.jsonl: idle then load, counter updating every 0.100 s, rows every 4 ms.
T0_S = 5_000.0  # the trace's first t_s, as perf_counter values would be
IDLE_W, LOAD_W, PHASE_S = 75, 300, 2.0
ROW_US, COUNTER_PERIOD_US, COUNTER_PHASE_US = 4_000, 100_000, 37_000
SLOW_EVERY = 25  # the recorder's default: clocks, temperature, processes every 25 rows
E0_MJ = 48_213_775_120  # the counter's value at T0 (a GPU that has been on a while)
LOAD_PID, LOAD_MEMORY_BYTES = 4242, 2_147_483_648
# Slow fields (sampler telemetry): HBM3 clock, utilisation, memory used, throttle reasons.
MEM_CLOCK_MHZ, LOAD_GPU_UTIL_PCT, LOAD_MEM_UTIL_PCT = 2619, 100, 38
IDLE_MEM_USED_MIB, LOAD_MEM_USED_MIB = 1, 2_571  # the load process's 2 GiB + its context
GPU_IDLE_MASK, SW_POWER_CAP_MASK = 0x1, 0x4  # pynvml's nvmlClocksEventReason* bits
POWER_CAP_FROM_S = 3.0  # the software power cap holds the clocks back from here on


def power_w(t_us: int) -> int:
    """The true power (W) of the synthetic GPU ``t_us`` µs after T0."""
    return IDLE_W if t_us < PHASE_S * 1e6 else LOAD_W


def energy_mj(t_us: int) -> int:
    """True energy (mJ) since T0 (W·µs = µJ), piecewise exact."""
    phase_us = int(PHASE_S * 1e6)
    return (min(t_us, phase_us) * IDLE_W + max(0, t_us - phase_us) * LOAD_W) // 1000


def h100_like_idle_load() -> list[dict[str, Any]]:
    """Idle ~75 W for 2 s, then load ~300 W for 2 s; only changed fields on fast rows."""
    header = {
        "gpu": H100,
        "driver": "580.95.05",
        "cuda_driver_version": 13000,
        "synthetic": True,
        "synthetic_because": (
            "exact, known power steps (75 W, 300 W) to test the replay itself, and the fields "
            "the recorder does not record (memory clock, utilisation, memory used, throttle "
            "reasons); real H100 rows: h100_idle.jsonl, h100_load.jsonl"
        ),
        "devices": [
            {
                "uuid": H100_UUID,
                "name": H100,
                "memory_total_bytes": H100_MEMORY_BYTES,
                "power_limit_mw": 700_000,
                "mig_mode": 0,
                "energy_counter_supported": True,
            }
        ],
    }
    rows: list[dict[str, Any]] = [header]
    last: dict[str, Any] = {}
    for i in range(int(2 * PHASE_S * 1e6) // ROW_US):
        t_us = i * ROW_US
        # The counter and the power reading move only at the driver's updates.
        updates = (
            (t_us - COUNTER_PHASE_US) // COUNTER_PERIOD_US + 1 if t_us >= COUNTER_PHASE_US else 0
        )
        update_us = COUNTER_PHASE_US + (updates - 1) * COUNTER_PERIOD_US if updates else 0
        load = t_us >= PHASE_S * 1e6
        fields: dict[str, Any] = {
            "phase": "load" if load else "idle",
            "energy_mj": E0_MJ + energy_mj(update_us),
            "power_mw": power_w(update_us) * 1000,
        }
        row: dict[str, Any] = {"t_s": round(T0_S + t_us / 1e6, 6)}
        row.update({k: v for k, v in fields.items() if last.get(k) != v})
        last.update(fields)
        if i % SLOW_EVERY == 0:
            row["sm_clock_mhz"] = 1980 if load else 345
            row["temperature_c"] = 33 + (
                12 * (t_us - int(PHASE_S * 1e6)) // 2_000_000 if load else 0
            )
            row["processes"] = (
                [{"pid": LOAD_PID, "used_memory_bytes": LOAD_MEMORY_BYTES}] if load else []
            )
            capped = t_us >= POWER_CAP_FROM_S * 1e6
            row["mem_clock_mhz"] = MEM_CLOCK_MHZ
            row["gpu_util_pct"] = LOAD_GPU_UTIL_PCT if load else 0
            row["mem_util_pct"] = LOAD_MEM_UTIL_PCT if load else 0
            row["mem_used_mib"] = LOAD_MEM_USED_MIB if load else IDLE_MEM_USED_MIB
            row["throttle_reasons"] = (
                (SW_POWER_CAP_MASK if capped else 0) if load else GPU_IDLE_MASK
            )
        rows.append(row)
    return rows


def no_energy_counter() -> list[dict[str, Any]]:
    """A Pascal-era GPU: power readings but no total-energy counter, no MIG."""
    device = {
        "uuid": "GPU-replay-pascal",
        "name": "NVIDIA GeForce GTX 1080",
        "memory_total_bytes": 8_589_934_592,
        "power_limit_mw": 180_000,
        "mig_mode": None,
        "energy_counter_supported": False,
    }
    header = {
        "gpu": device["name"],
        "driver": "535.288.01",
        "synthetic": True,
        "synthetic_because": (
            "a GPU without the total-energy counter: the lent H100 has one (its real power "
            "with the counter withheld: h100_load_no_counter.jsonl)"
        ),
        "devices": [device],
    }
    return [header] + [{"t_s": round(10.0 + i * 0.05, 6), "power_mw": 60_000} for i in range(20)]


FIRST_PID, FOREIGN_PID, FOREIGN_FROM_S = 4242, 31_337, 0.5


def foreign_process() -> list[dict[str, Any]]:
    """1 s at 100 W; a second (foreign) compute process appears half way."""
    header = {
        "gpu": H100,
        "driver": "580.95.05",
        "synthetic": True,
        "synthetic_because": (
            "a second process starting mid-window next to ours: the recording has one, there "
            "from the start of its load phase (real: h100_load.jsonl)"
        ),
        "devices": [{"uuid": H100_UUID, "name": H100, "memory_total_bytes": H100_MEMORY_BYTES}],
    }
    rows: list[dict[str, Any]] = [header]
    for i in range(20):
        pids = [FIRST_PID] + ([FOREIGN_PID] if i * 0.05 >= FOREIGN_FROM_S else [])
        rows.append(
            {
                "t_s": round(100.0 + i * 0.05, 6),
                "energy_mj": 1_000_000 + 5_000 * i,
                "power_mw": 100_000,
                "processes": [{"pid": p, "used_memory_bytes": 2**30} for p in pids],
            }
        )
    return rows


def mig() -> list[dict[str, Any]]:
    """An A100 with MIG mode enabled."""
    device = {
        "uuid": "GPU-replay-a100-mig",
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total_bytes": 81_920 * 2**20,
        "power_limit_mw": 400_000,
        "mig_mode": 1,
    }
    header = {
        "gpu": device["name"],
        "driver": "570.172.08",
        "cuda_driver_version": 12080,
        "synthetic": True,
        "synthetic_because": "MIG enabled: the lent H100's MIG setting must not be changed",
        "devices": [device],
    }
    return [header] + [
        {"t_s": round(1.0 + i * 0.1, 6), "energy_mj": 9_000_000 + 9_000 * i, "power_mw": 90_000}
        for i in range(10)
    ]


OK_UUID, LOST_UUID = "GPU-replay-ok", "GPU-replay-lost"


def lost_gpu() -> list[dict[str, Any]]:
    """Two GPUs; the second is counted by NVML but lost (fell off the bus)."""
    devices = [
        {"uuid": OK_UUID, "name": H100, "memory_total_bytes": H100_MEMORY_BYTES},
        {"uuid": LOST_UUID, "name": H100, "handles_fail": True},
    ]
    header = {
        "gpu": H100,
        "driver": "580.95.05",
        "synthetic": True,
        "synthetic_because": "a lost GPU: none can be taken off the lent machine's bus",
        "devices": devices,
    }
    return [header] + [
        {"t_s": round(1.0 + i * 0.1, 6), "energy_mj": 1_000 * i, "power_mw": 80_000}
        for i in range(10)
    ]


TRACES = {
    "h100_like_idle_load.jsonl": h100_like_idle_load,
    "no_energy_counter.jsonl": no_energy_counter,
    "foreign_process.jsonl": foreign_process,
    "mig.jsonl": mig,
    "lost_gpu.jsonl": lost_gpu,
}


def render(lines: list[dict[str, Any]]) -> str:
    """One compact JSON object a line."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def main(directory: Path = HERE) -> None:
    for name, make in TRACES.items():
        (directory / name).write_text(render(make()))


if __name__ == "__main__":
    main()
