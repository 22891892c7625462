"""Real coordinator ↔ worker processes with the built-in model on CPU.

These start real worker subprocesses (torch import included), so each takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lem.coordinator.execution.gpus import CPU_ONLY
from lem.coordinator.execution.hub import Hub
from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.execution.supervisor import Supervisor, WorkerStartError
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store
from lem.protocol.messages import PROTOCOL_VERSION, Progress

LONG_CAMPAIGN = """\
name: long
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 8
  output_tokens: 8
  num_prompts: 2
  warmup_batches: 0
grid:
  output_tokens: [1500, 8, 8]
cycles: 1
"""


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _spec(
    tmp_path: Path, hub: Hub, worker_id: str, protocol_version: int | None = None
) -> WorkerSpec:
    return WorkerSpec(
        worker_id=worker_id,
        backend="pytorch",
        endpoint=hub.endpoint,
        assignment=CPU_ONLY,
        journal_path=tmp_path / f"{worker_id}.jsonl",
        log_path=tmp_path / f"{worker_id}.log",
        handshake_timeout_s=60.0,
        protocol_version=protocol_version,
    )


def test_version_mismatch_is_refused_and_the_worker_exits(tmp_path: Path) -> None:
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher(), handshake_timeout_s=60)
    try:
        with pytest.raises(
            WorkerStartError,
            match=f"speaks lem protocol v99 but this coordinator speaks v{PROTOCOL_VERSION}",
        ):
            supervisor.start_worker(_spec(tmp_path, hub, "w-old", protocol_version=99))
        assert supervisor.workers == {}
        assert "coordinator refused this worker" in (tmp_path / "w-old.log").read_text()
    finally:
        hub.close()


def test_a_worker_that_cannot_start_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_PYTHON_PYTORCH", "/bin/false")
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher(), handshake_timeout_s=30)
    started = time.monotonic()
    try:
        with pytest.raises(
            WorkerStartError, match=r"exit status 1\) died .*import lem.workers.*w-bad.log"
        ):
            supervisor.start_worker(_spec(tmp_path, hub, "w-bad"))
        assert time.monotonic() - started < 10  # the sentinel, not the handshake timeout
    finally:
        hub.close()


def test_killed_worker_is_detected_fast_and_the_campaign_goes_on(tmp_path: Path) -> None:
    plan = plan_campaign(_write(tmp_path, LONG_CAMPAIGN))
    killed_at: list[float] = []
    failed_at: list[float] = []
    pids: list[int] = []

    def kill_first_measurement(exp, cycle, event: Progress, handle) -> None:  # type: ignore[no-untyped-def]
        pids.append(handle.process.pid)
        if exp.position == 0 and event.phase == "measuring" and not killed_at:
            time.sleep(0.5)  # well inside the measured window
            os.kill(handle.process.pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    with Store(tmp_path / "lem.db") as store:
        original = store.record_failure

        def timed_failure(
            experiment_id: str, cycle: int, reason: str, worker: str | None, attempts: int | None
        ) -> bool:
            failed_at.append(time.monotonic())
            return original(experiment_id, cycle, reason, worker, attempts)

        setattr(store, "record_failure", timed_failure)  # noqa: B010
        outcome = CampaignRunner(
            plan,
            store,
            RunOptions(store_path=tmp_path / "lem.db", max_attempts=1),  # no retry here
            on_progress=kill_first_measurement,
        ).run()
        detail = store.campaign_detail(outcome.campaign_id)
    assert killed_at and failed_at
    assert failed_at[0] - killed_at[0] < 5.0
    assert outcome.measured == 2
    [(name, cycle, reason)] = outcome.failures
    assert name == "output_tokens=1500" and cycle == 0
    assert "died: killed by SIGKILL" in reason
    assert len(set(pids)) == 2  # a fresh worker served the rest
    assert [e.cycles_failed for e in detail.experiments] == [1, 0, 0]
    assert detail.campaign.status == "failed"
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )


def test_same_model_is_loaded_once_and_a_new_model_reloads(tmp_path: Path) -> None:
    text = LONG_CAMPAIGN.replace("output_tokens: [1500, 8, 8]", "model.seed: [0, 0, 1]")
    plan = plan_campaign(_write(tmp_path, text))
    with Store(tmp_path / "lem.db") as store:
        outcome = CampaignRunner(plan, store, RunOptions(store_path=tmp_path / "lem.db")).run()
        detail = store.campaign_detail(outcome.campaign_id)
        records = [store.experiment_measurements(e.id)[0].measurement for e in detail.experiments]
    assert outcome.failures == []
    assert [(m.preparation.model_reused, m.preparation.model_load_count) for m in records if m] == [
        (False, 1),
        (True, 1),
        (False, 2),
    ]
    assert len({m.worker_id for m in records if m}) == 1


def _run_cli(tmp_path: Path, campaign: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lem.coordinator",
            "campaign",
            str(campaign),
            "--store",
            str(tmp_path / "lem.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_worker(coordinator: psutil.Process, timeout_s: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in coordinator.children():
            try:
                if "lem.workers" in " ".join(child.cmdline()):
                    return child
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue  # a short-lived helper (ldconfig -p, at each launch) just ended
        time.sleep(0.1)
    raise AssertionError("no worker appeared")


def test_killed_coordinator_leaves_no_orphan_worker(tmp_path: Path) -> None:
    coordinator = _run_cli(tmp_path, _write(tmp_path, LONG_CAMPAIGN))
    worker = _wait_for_worker(psutil.Process(coordinator.pid))
    time.sleep(1.0)
    coordinator.kill()
    coordinator.wait(10)
    worker.wait(timeout=10)  # raises psutil.TimeoutExpired if the worker outlives us


def test_ctrl_c_interrupts_cleanly_and_keeps_stored_results(tmp_path: Path) -> None:
    text = LONG_CAMPAIGN.replace("output_tokens: [1500, 8, 8]", "output_tokens: [8, 1500]")
    coordinator = _run_cli(tmp_path, _write(tmp_path, text))
    worker = _wait_for_worker(psutil.Process(coordinator.pid))
    store_path = tmp_path / "lem.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the first experiment is stored
        if store_path.exists():
            with Store(store_path) as store:
                campaigns = store.list_campaigns()
                if campaigns and campaigns[0].measurements_ok == 1:
                    break
        time.sleep(0.2)
    coordinator.send_signal(signal.SIGINT)
    _, stderr = coordinator.communicate(timeout=60)
    assert coordinator.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    worker.wait(timeout=5)
    with Store(store_path) as store:
        [summary] = store.list_campaigns()
    assert summary.status == "interrupted" and summary.measurements_ok == 1


def test_coordinator_never_imports_gpu_libraries(tmp_path: Path) -> None:
    campaign = _write(tmp_path, LONG_CAMPAIGN.replace("[1500, 8, 8]", "[4]"))
    script = (
        "import sys, json\n"
        "from lem.coordinator.cli.main import main\n"
        "try:\n"
        f"    main(['campaign', {str(campaign)!r}, '--store', {str(tmp_path / 'lem.db')!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'vllm', 'tensorrt_llm', 'accelerate'))\n"
        "print(json.dumps({'code': code, 'bad': bad}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "bad": []}, done.stderr
    with Store(tmp_path / "lem.db") as store:
        [summary] = store.list_campaigns()
    assert summary.measurements_ok == 1
    assert summary.median_output_tokens_per_s is not None
    assert summary.median_output_tokens_per_s > 0


def test_worker_exits_when_the_coordinator_falls_silent(tmp_path: Path) -> None:
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher(), orphan_timeout_s=2.0)
    try:
        handle = supervisor.start_worker(_spec(tmp_path, hub, "w-lonely"))
    finally:
        hub.close()  # the I/O thread ends: no coordinator heartbeat reaches the worker
    assert handle.process.wait(10.0) == 3  # EXIT_COORDINATOR_LOST
    assert "coordinator silent" in (tmp_path / "w-lonely.log").read_text()
