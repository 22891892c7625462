"""Cut the NVML trace recorded on an H100 into lem's replay fixtures (real, not synthetic).

    python tests/data/convert_recorded_trace.py                  # rewrite the fixtures
    python tests/data/convert_recorded_trace.py --raw trace.jsonl   # store a new recording first

The recording, ``h100_recorded.jsonl.gz``, is ``benchmarks/record_nvml_trace.py --idle-s 5
--load-s 5`` run on the H100 lent to lem, stored byte for byte (gzip level 9, no name or
time in the gzip header: 13 KB for 200 KB). It is committed so that ``test_recorded_traces``
can check that the fixtures below are exactly this script's output on it. Written here:

- ``h100_idle.jsonl`` (real): 1.8 s of the idle phase. The GPU had just finished a load:
  the counter runs at ~132 W, steps down to ~77 W, and NVML's power reading (a ~1 s moving
  average) follows about a second later; then steady idle.
- ``h100_load.jsonl`` (real): 1.9 s of steady load (~690 W) while the recorder's child
  process, pid 904 (a bf16 matmul loop, not lem), computes on the GPU.
- ``h100_load_no_counter.jsonl`` (derived): ``h100_load.jsonl`` with ``energy_mj`` removed
  from every row and the counter declared unsupported, so lem must integrate the real
  power samples.

Rows are the recorder's own lines, copied unchanged; each cut is contiguous and begins on
a slow row (clocks, temperature, processes: every 25th row), so no field is filled forward
(the headers' ``"filled_forward": []``; the replay itself keeps a field's last value between
slow rows, as its format says). Only the header is new: the recorder writes ``{gpu,
driver}``; the device facts added here (``DEVICE``) are lem's inventory of the same GPU in
the same device session. Deterministic: same recording, same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDING = HERE / "h100_recorded.jsonl.gz"
RECORDED_ON = "2026-11-27"
RECORDER = "benchmarks/record_nvml_trace.py --idle-s 5 --load-s 5"
GPU, DRIVER, CUDA_DRIVER_VERSION = "NVIDIA H100 80GB HBM3", "580.159.04", 13000
# lem's inventory of that GPU in the same device session (its store's environment record).
DEVICE: dict[str, Any] = {
    "uuid": "GPU-ef8e7e53-ef8e-404c-1c2b-b8e64aaed4ea",
    "name": GPU,
    "memory_total_bytes": 81_559 * 2**20,
    "power_limit_mw": 700_000,
    "mig_mode": 0,
    "energy_counter_supported": True,
}
LOAD_PID = 904  # the recorder's load child: a foreign process for any lem worker
SLOW_FIELDS = ("sm_clock_mhz", "temperature_c", "processes")
MAX_STEP_S = 0.03  # a cut is contiguous: no two rows further apart (recorded: ~4 ms)


@dataclass(frozen=True)
class Cut:
    """Rows of ``phase`` from the first slow row at or after ``from_s`` to the last row
    before ``until_s`` (the recording's ``t_s``, perf_counter seconds)."""

    name: str
    phase: str
    from_s: float
    until_s: float
    about: str


CUTS = (
    Cut(
        "h100_idle.jsonl",
        "idle",
        498.87,
        500.70,
        "idle right after a load: the counter steps from ~132 W to ~77 W at t_s 499.14; the "
        "power reading (a ~1 s moving average) decays to 77 W by 500.24; steady after",
    ),
    Cut(
        "h100_load.jsonl",
        "load",
        506.69,
        508.60,
        f"steady load at ~690 W; pid {LOAD_PID} (the recorder's bf16 matmul child, not lem) "
        "is the GPU's only compute process",
    ),
)
DERIVED = "h100_load_no_counter.jsonl"


def read_recording(path: Path = RECORDING) -> list[str]:
    """The recording's lines (header first), from a .jsonl or a .jsonl.gz file."""
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode().splitlines()


def store_recording(raw: Path, path: Path = RECORDING) -> None:
    """Keep ``raw`` byte for byte, gzipped reproducibly (no file name, time 0)."""
    path.write_bytes(gzip.compress(raw.read_bytes(), compresslevel=9, mtime=0))


def cut_span(rows: list[dict[str, Any]], cut: Cut) -> tuple[int, int]:
    """Indices (into ``rows``) of the cut's first and last row; ValueError if unusable."""
    first = next(
        (
            i
            for i, r in enumerate(rows)
            if r["phase"] == cut.phase and r["t_s"] >= cut.from_s and "processes" in r
        ),
        None,
    )
    if first is None:
        raise ValueError(f"{cut.name}: no {cut.phase} slow row at or after t_s {cut.from_s}")
    last = first
    while last + 1 < len(rows) and rows[last + 1]["t_s"] < cut.until_s:
        if rows[last + 1]["phase"] != cut.phase:
            raise ValueError(f"{cut.name}: the {cut.phase} phase ends before t_s {cut.until_s}")
        if rows[last + 1]["t_s"] - rows[last]["t_s"] > MAX_STEP_S:
            raise ValueError(f"{cut.name}: a gap in the rows after t_s {rows[last]['t_s']}")
        last += 1
    return first, last


def header(lines: list[str], cut: Cut, first: int, last: int) -> dict[str, Any]:
    """A real cut's header: the recording's facts, where the rows come from, and what they show."""
    recorded = json.loads(lines[0])
    if (recorded.get("gpu"), recorded.get("driver")) != (GPU, DRIVER):
        raise ValueError(f"recorded on {recorded}, but DEVICE describes {GPU} / {DRIVER}")
    sha256 = hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()
    return {
        "gpu": GPU,
        "driver": DRIVER,
        "cuda_driver_version": CUDA_DRIVER_VERSION,
        "synthetic": False,
        "recorded": f"{RECORDED_ON} on an {GPU} (driver {DRIVER}) by {RECORDER}",
        "source": {
            "file": RECORDING.name,
            "sha256": sha256,
            "lines": [first + 2, last + 2],  # 1-based, the header is line 1
            "phase": cut.phase,
        },
        "shows": cut.about,
        "filled_forward": [],
        "devices": [DEVICE],
    }


def derive_without_counter(text: str) -> str:
    """A real cut with its counter withheld: no ``energy_mj``, the counter unsupported."""
    lines = text.splitlines()
    head = json.loads(lines[0])
    head["derived"] = (
        f"the real cut {CUTS[1].name} (same rows) with energy_mj removed from every row and "
        "the counter declared unsupported; every other value as recorded"
    )
    head["devices"] = [{**DEVICE, "energy_counter_supported": False}]
    rows = [{k: v for k, v in json.loads(line).items() if k != "energy_mj"} for line in lines[1:]]
    return "".join(json.dumps(obj) + "\n" for obj in [head, *rows])


def fixtures(lines: list[str]) -> dict[str, str]:
    """File name → text of every fixture made from the recording's ``lines``."""
    rows = [json.loads(line) for line in lines[1:]]
    texts: dict[str, str] = {}
    for cut in CUTS:
        first, last = cut_span(rows, cut)
        kept = [json.dumps(header(lines, cut, first, last)), *lines[first + 1 : last + 2]]
        texts[cut.name] = "".join(line + "\n" for line in kept)
    texts[DERIVED] = derive_without_counter(texts[CUTS[1].name])
    return texts


def main(argv: list[str] | None = None, directory: Path = HERE) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="a new recording to store as the source first")
    args = parser.parse_args(argv)
    if args.raw is not None:
        store_recording(args.raw)
    for name, text in fixtures(read_recording()).items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    main()
