"""Wall time of ``lem doctor``: process start to exit, interpreter and imports included.

Runs ``python -m lem.coordinator doctor`` ``--runs`` times in fresh processes (output
discarded; its exit status 1, "no backend can run", counts as a run too) and prints JSON:
each run's wall time (s) and CPU time (s, user + system of it and its probes), their
minimum and median, and the load average before and after (the doctor's probes import
torch in child processes: on a busy machine the wall time grows, the CPU time hardly). ``--lem
DIR``: time the lem of another checkout (its ``.mypy-src`` link tree, as the repo's
conventions run it) to compare two revisions under the same load, alternating their runs.
``--heavy-engines``: give the vllm and tensorrt backends an interpreter (``LEM_<BACKEND>_
PYTHON``, a wrapper of this Python) that imports torch and transformers before the probe,
as a machine with a real environment for each engine does; otherwise, with neither engine
installed here, their probes fail in ~0.1 s and only the pytorch probe takes time.

    python benchmarks/doctor_wall_time.py [--runs 5] [--lem DIR ...] [--heavy-engines]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY_WRAPPER = """#!/bin/sh
"{python}" -c "import torch, transformers" || exit 1
exec "{python}" "$@"
"""


def heavy_engine_variables(folder: Path) -> dict[str, str]:
    """``LEM_VLLM_PYTHON`` and ``LEM_TENSORRT_PYTHON``: a wrapper that imports torch and
    transformers, then runs this Python with the probe's arguments."""
    wrapper = folder / "python-heavy"
    wrapper.write_text(HEAVY_WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    return {"LEM_VLLM_PYTHON": str(wrapper), "LEM_TENSORRT_PYTHON": str(wrapper)}


def one_run(lem_root: Path | None, extra: dict[str, str]) -> tuple[float, float]:
    """Seconds from starting ``lem doctor`` to its exit, and the CPU seconds it and its
    children used."""
    env = {**os.environ, **extra}
    if lem_root is not None:
        env["PYTHONPATH"] = str(lem_root / ".mypy-src")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_s = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "doctor"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    wall_s = time.perf_counter() - started_s
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise SystemExit(f"lem doctor failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return wall_s, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--lem", type=Path, action="append", default=[], help="a checkout to time (repeatable)"
    )
    parser.add_argument("--heavy-engines", action="store_true")
    args = parser.parse_args()
    roots: list[Path | None] = [*args.lem] or [None]
    load_before = os.getloadavg()[0]
    walls: dict[str, list[float]] = {str(root or "this lem"): [] for root in roots}
    cpus: dict[str, list[float]] = {name: [] for name in walls}
    with tempfile.TemporaryDirectory(prefix="lem-doctor-bench-") as folder:
        extra = heavy_engine_variables(Path(folder)) if args.heavy_engines else {}
        for _ in range(args.runs):
            for root in roots:  # alternating: each revision sees the same load
                wall_s, cpu_s = one_run(root, extra)
                walls[str(root or "this lem")].append(round(wall_s, 3))
                cpus[str(root or "this lem")].append(round(cpu_s, 3))
    result = {
        "cpu_count": os.cpu_count(),
        "heavy_engines": args.heavy_engines,
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "runs": {
            name: {
                "wall_s": values,
                "min_s": min(values),
                "median_s": round(statistics.median(values), 3),
                "cpu_s": cpus[name],
                "median_cpu_s": round(statistics.median(cpus[name]), 3),
            }
            for name, values in walls.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
