"""One fuzz seed per pytest run, xdist workers included: a process started from this one
(as ``make test``'s xdist workers are) draws the same seed, and ``-q`` still prints it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fuzz import FUZZ_SEED, reproduce_line


def test_a_process_started_from_this_run_uses_its_seed() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import tests.fuzz as f; print(f.FUZZ_SEED)"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) == FUZZ_SEED
    assert f"LEM_FUZZ_SEED={FUZZ_SEED} " in reproduce_line()


def test_make_tests_quiet_run_still_prints_the_seed() -> None:
    """``make test`` runs ``pytest -q`` (no header): the seed is printed at the end."""
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{Path(__file__).relative_to(root)}::test_a_process_started_from_this_run_uses_its_seed"],
        capture_output=True, text=True, timeout=120, cwd=root,
        env={**os.environ, "LEM_FUZZ_SEED": "4242"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lem fuzz seed: LEM_FUZZ_SEED=4242 pytest tests/fuzz" in done.stdout, done.stdout
