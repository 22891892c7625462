"""Faults at the command line's edges (issue 15): one line and exit 2 for bad input, 130 for
an interrupt at any moment, no orphaned worker interpreter, no unauthenticated tcp://."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SLEEP_BACKEND = "lem.workers.engines.sleep:SleepBackend"
IDLE_TRACE = str(Path(__file__).parent / "data" / "h100_idle.jsonl")
SLOW_CAMPAIGN = """\
name: slow
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 4
  output_tokens: 4
  num_prompts: 2
  warmup_batches: 0
  min_window_s: 20
cycles: 1
"""


def lem(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lem: error: "), done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def sleep_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    monkeypatch.setenv("LEM_NVML_REPLAY", IDLE_TRACE)


def test_a_tcp_endpoint_is_refused_until_authenticated(tmp_path: Path, tiny_campaign: Path) -> None:
    db = tmp_path / "lem.db"
    for command in (["campaign", str(tiny_campaign)], ["run", str(tiny_campaign)]):
        done = lem(*command, "--store", str(db), "--endpoint", "tcp://127.0.0.1:5555")
        one_line_error(done, "tcp:// endpoints are refused until they are authenticated")
    assert not db.exists()


@pytest.mark.usefixtures("sleep_engine")
@pytest.mark.parametrize("delay_s", [0, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_sigint_at_any_early_moment_exits_130_quietly(tmp_path: Path, delay_s: float) -> None:
    campaign = tmp_path / "slow.yaml"
    campaign.write_text(SLOW_CAMPAIGN)  # still measuring when the signal comes
    proc = subprocess.Popen(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(campaign),
         "--store", str(tmp_path / "lem.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    # killed by SIGINT before Python's own handler exists is what a shell shows as 130 too
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr


def test_a_worker_interpreter_hung_before_lem_code_dies_with_the_coordinator(
    tmp_path: Path, tiny_campaign: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 1000\n")  # never reaches lem's own code
    fake.chmod(0o755)
    monkeypatch.setenv("LEM_PYTORCH_PYTHON", str(fake))
    monkeypatch.delenv("LEM_WORKER_BACKEND", raising=False)
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(tiny_campaign),
         "--store", str(tmp_path / "lem.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[psutil.Process] = []
    try:
        deadline_s = time.monotonic() + 30
        while not (workers := psutil.Process(coordinator.pid).children()):
            assert time.monotonic() < deadline_s, "no worker started"
            time.sleep(0.05)
        time.sleep(0.2)  # the worker has exec'ed the script
        coordinator.kill()
        coordinator.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"orphaned: {alive}"
    finally:
        coordinator.kill()
        for worker in workers:  # the orphans of a failed run: ours to end, by pid
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
