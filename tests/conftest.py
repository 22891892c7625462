"""Shared fixtures: small campaign files for the built-in model (run on CPU), and real GPU
traces served as NVML."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lem.protocol.devices.nvml_replay import uninstall_all
from tests.fuzz import reproduce_line
from tests.recorded import OnReplay, start_replay

TINY_CAMPAIGN = """\
name: tiny
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 8
  output_tokens: 8
  num_prompts: 4
  warmup_batches: 1
grid:
  batch_size: [1, 2]
cycles: 1
"""


@pytest.fixture
def tiny_campaign(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CAMPAIGN)
    return path


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., OnReplay]]:
    """``replay(name, tick_s=0.0)``: a real trace of tests/data/ served as lem's NVML."""
    yield functools.partial(start_replay, monkeypatch)
    uninstall_all()


def pytest_report_header() -> str:
    """The fuzz tests' seed (tests/fuzz), to run the same examples again."""
    return f"lem fuzz seed: {reproduce_line()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The seed again at the end: ``-q`` (``make test``, so CI) prints no header."""
    terminalreporter.write_line(f"lem fuzz seed: {reproduce_line()}")
