"""Helpers for the tests that feed hostile input through the real CLI (issue 15):
run ``lem``, check a run was refused with one line, write a campaign file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BASE = "name: c\nexperiment:\n  model: {source: builtin, name: lem-tiny}\n"


def lem(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The one stderr line of a run that exited 2, checked to hold ``expected``."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
