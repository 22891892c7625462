"""A started server that fails: through the real CLI (coordinator, worker, store) on CPU.

A server that does not start is retried up to ``max_attempts`` (``ServerStartError`` is a
``RetryableError``), each attempt's reason naming the server's exit with its log's tail;
nothing waits past ``ready_timeout_s``. The real server is ``transformers serve`` of the
built-in tiny model (``tests/test_openai_engine.py``'s fixture); a server that fails is a
few lines of Python or shell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lem.coordinator.store.results_store import Store
from lem.coordinator.store.schema import MeasurementRecord
from tests.lem_run import lem_run_one
from tests.test_openai_engine import (  # noqa: F401  (model_dir: a fixture)
    START_TIMEOUT_S,
    TRANSFORMERS,
    _started_model,
    experiment,
    model_dir,
    server_pids,
)

needs_transformers = pytest.mark.skipif(
    not Path(TRANSFORMERS).exists(), reason="transformers CLI missing"
)


def openai_section(command: list[str], **more: object) -> str:
    return json.dumps({"command": command, "stop_grace_s": 3, **more})


def run_campaign(tmp_path: Path, experiment_yaml: str, max_attempts: int) -> subprocess.Popen[str]:
    """``lem campaign`` of one experiment, one cycle, ``max_attempts`` attempts."""
    file = tmp_path / "campaign.yaml"
    indented = "".join(f"  {line}\n" for line in experiment_yaml.splitlines())
    file.write_text(f"name: openai-failures\nmax_attempts: {max_attempts}\nexperiment:\n{indented}")
    return subprocess.Popen(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(file),
         "--store", str(tmp_path / "lem.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stored(tmp_path: Path) -> tuple[MeasurementRecord, tuple[str, int, str | None]]:
    """The one stored cycle and its state (state, attempts, last attempt's reason)."""
    with Store(tmp_path / "lem.db") as store:
        [campaign] = store.list_campaigns()
        [summary] = store.campaign_detail(campaign.id).experiments
        [record] = store.experiment_measurements(summary.id)
        [state] = store.cycle_states(campaign.id).values()
    return record, state


@pytest.mark.slow
@needs_transformers
def test_a_server_that_fails_its_first_start_is_retried_and_the_cycle_measured(
    model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    model = _started_model(model_dir, tmp_path)
    marker = tmp_path / "started-once"
    flaky = tmp_path / "flaky-server.sh"
    flaky.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then\n'
        f'  touch "{marker}"\n'
        '  echo "flaky: port taken, giving up" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{TRANSFORMERS}" serve "{model}" --port "$1"\n'
    )
    flaky.chmod(0o755)
    section = openai_section([str(flaky), "{port}"])
    outcome = lem_run_one(tmp_path, experiment(model, section), 240)
    assert outcome.record.status == "ok" and outcome.record.measurement is not None
    assert outcome.record.attempts == 2
    state, attempts, first_reason = stored(tmp_path)[1]
    assert (state, attempts) == ("ok", 2)
    assert first_reason is not None and "ServerStartError" in first_reason
    assert "the server exited with status 1" in first_reason
    assert ".server.log:\n" in first_reason and "flaky: port taken, giving up" in first_reason
    assert server_pids(str(model)) == []


NEVER_READY = "import time; print('listening nowhere', flush=True); time.sleep(600)"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "import sys; print('no port for me', file=sys.stderr); sys.exit(3)",
            ["the server exited with status 3", "no port for me"],
        ),
        (NEVER_READY, ["was not ready after 2 s", "listening nowhere"]),
    ],
    ids=["exits", "never-ready"],
)
def test_a_server_that_never_starts_fails_the_cycle_after_max_attempts(
    tmp_path: Path, script: str, expected: list[str]
) -> None:
    marker = f"never-starts-{tmp_path.name}"  # on its command line, to find its processes
    section = openai_section([sys.executable, "-c", script, marker], ready_timeout_s=2)
    yaml = experiment(tmp_path, section)  # the model is the server's: never read here
    started_s = time.monotonic()
    lem = run_campaign(tmp_path, yaml, max_attempts=3)
    _, stderr = lem.communicate(timeout=120)
    assert lem.returncode == 1, stderr
    assert time.monotonic() - started_s < 60  # three bounded waits, no hang
    record, (state, attempts, last_reason) = stored(tmp_path)
    assert record.status == "failed" and record.attempts == 3
    assert (state, attempts) == ("failed", 3)
    reason = record.failure_reason or ""
    assert reason.startswith("ServerStartError: ") and reason == last_reason
    assert all(text in reason for text in expected), reason
    assert ".server.log:\n" in reason
    assert server_pids(marker) == []
