"""Resume after any crash, faults and graceful interrupt, with real processes on CPU.

Workers run the sleep backend (``LEM_WORKER_BACKEND``), so a cycle is a fraction of a
second and no model is loaded. Coordinators are killed from outside; what survives is
checked from outside with psutil.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from lem.coordinator.execution.resume import ingest_journals, resumable, run_dir
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.execution.supervisor import WorkerHandle
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store
from lem.protocol.messages import Progress

SLEEP_BACKEND = "lem.workers.engines.sleep:SleepBackend"
CAMPAIGN = """\
name: faults
experiment:
  device: cpu
  model: {{source: builtin, name: lem-tiny}}
  input_tokens: 4
  output_tokens: 50
  num_prompts: 2
  warmup_batches: 0
  min_window_s: {window_s}
  timeout_s: {timeout_s}
grid:
  batch_size: [1, 2]
cycles: {cycles}
"""
PLANNED = {(p, c) for p in (0, 1) for c in range(3)}


@pytest.fixture(autouse=True)
def sleep_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)


def campaign_file(
    tmp_path: Path, window_s: float = 0.4, timeout_s: float = 30, cycles: int = 3
) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(CAMPAIGN.format(window_s=window_s, timeout_s=timeout_s, cycles=cycles))
    return path


def lem(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def start_lem(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lem.coordinator", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def ok_pairs(db: Path) -> list[tuple[object, ...]]:
    """Every stored ok (position, cycle), duplicates kept."""
    return query(
        db,
        "SELECT e.position, m.cycle FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id WHERE m.status = 'ok' ORDER BY 1, 2",
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


def stored_ok(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return len(ok_pairs(db))
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(procs: list[psutil.Process], timeout_s: float) -> None:
    wait_until(lambda: not any(alive(p) for p in procs), timeout_s, f"{procs} exit")
    for p in procs:  # by PID too: nothing with that PID is running, or it is another process
        assert not psutil.pid_exists(p.pid) or not alive(p)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_kill_9_coordinator_then_resume_stores_the_planned_set_once(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path), tmp_path / "lem.db"
    coordinator = start_lem("campaign", str(path), "--store", str(db))
    wait_until(lambda: stored_ok(db) >= 1, 30, "a first stored result")
    workers = descendants(coordinator.pid)
    assert workers, "the coordinator has a worker"
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(10)
    assert_all_gone(workers, timeout_s=10)  # workers notice their coordinator's death
    [(campaign_id, status)] = query(db, "SELECT id, status FROM campaigns")
    assert status == "running" and len(ok_pairs(db)) < len(PLANNED)

    done = lem("campaign", str(path), "--resume", "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert ok_pairs(db) == sorted(PLANNED)  # exactly the planned set, none twice
    assert query(db, "SELECT id, status FROM campaigns") == [(campaign_id, "finished")]
    assert query(db, "SELECT count(*) FROM experiments") == [(2,)]


def test_sigint_exits_130_leaves_no_process_then_resume_completes(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.8), tmp_path / "lem.db"
    coordinator = start_lem("campaign", str(path), "--store", str(db))
    wait_until(lambda: stored_ok(db) >= 1, 30, "a first stored result")
    tree = descendants(coordinator.pid)
    assert tree
    [(running_id,)] = query(db, "SELECT id FROM campaigns")
    busy = lem("resume", str(running_id), "--store", str(db))
    assert busy.returncode == 2 and f"still being run by lem (pid {coordinator.pid})" in busy.stderr
    coordinator.send_signal(signal.SIGINT)
    _, stderr = coordinator.communicate(timeout=30)
    assert coordinator.returncode == 130, stderr
    assert_all_gone(tree, timeout_s=2)
    [(campaign_id, status)] = query(db, "SELECT id, status FROM campaigns")
    assert status == "interrupted" and f"lem resume {campaign_id}" in stderr
    assert not query(db, "SELECT 1 FROM cycle_states WHERE state = 'running'")

    done = lem("resume", str(campaign_id), "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert ok_pairs(db) == sorted(PLANNED)
    assert query(db, "SELECT status FROM campaigns") == [("finished",)]


def run_in_process(
    path: Path,
    db: Path,
    on_progress: Callable[[WorkerHandle], None] | None = None,
    **options: float,
) -> tuple[CampaignRunner, Store]:
    store = Store(db)

    def hook(_exp: object, _cycle: int, event: Progress, handle: WorkerHandle) -> None:
        if event.phase == "measuring" and on_progress is not None:
            on_progress(handle)

    opts = RunOptions(store_path=db, **options)  # type: ignore[arg-type]
    return CampaignRunner(plan_campaign(path), store, opts, on_progress=hook), store


def test_kill_9_worker_mid_experiment_retries_on_a_fresh_worker(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.5, cycles=1), tmp_path / "lem.db"
    killed: list[int] = []

    def kill_first(handle: WorkerHandle) -> None:
        if not killed:
            killed.append(handle.process.pid)
            os.kill(handle.process.pid, signal.SIGKILL)

    runner, store = run_in_process(path, db, kill_first)
    with store:
        outcome = runner.run()
        detail = store.campaign_detail(outcome.campaign_id)
        [first] = store.experiment_measurements(detail.experiments[0].id)
        states = store.cycle_states(outcome.campaign_id)
    assert outcome.failures == [] and outcome.measured == 2
    assert first.status == "ok" and first.attempts == 2
    assert first.worker_id is not None and first.worker_id.startswith("w2-")  # a fresh one
    assert states[(0, 0)][:2] == ("ok", 2) and "died" in str(states[(0, 0)][2])
    assert not psutil.pid_exists(killed[0]) or not alive(psutil.Process(killed[0]))


def test_stopped_worker_times_out_is_replaced_and_fails_after_max_attempts(
    tmp_path: Path,
) -> None:
    path, db = campaign_file(tmp_path, window_s=0.5, timeout_s=1, cycles=1), tmp_path / "lem.db"
    stopped: list[psutil.Process] = []

    def stop_batch_1(handle: WorkerHandle) -> None:  # batch_size=1 runs first
        if len(stopped) < 2:
            stopped.append(psutil.Process(handle.process.pid))
            os.kill(handle.process.pid, signal.SIGSTOP)

    runner, store = run_in_process(
        path, db, stop_batch_1, heartbeat_timeout_s=5, cancel_grace_s=0.5, max_attempts=2
    )
    with store:
        outcome = runner.run()
        detail = store.campaign_detail(outcome.campaign_id)
        [failed] = store.experiment_measurements(detail.experiments[0].id)
    [(name, cycle, reason)] = outcome.failures
    assert (name, cycle) == ("batch_size=1", 0)
    assert reason == "timed out after 1 s (attempts: 2)"
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert failed.failure_reason == "timed out after 1 s"
    assert detail.campaign.status == "failed" and detail.experiments[1].cycles_ok == 1
    assert len({p.pid for p in stopped}) == 2  # each attempt had its own worker
    assert_all_gone(stopped, timeout_s=2)


def test_a_stopped_worker_past_the_heartbeat_deadline_is_killed_and_replaced(
    tmp_path: Path,
) -> None:
    path, db = campaign_file(tmp_path, window_s=0.5, timeout_s=60, cycles=1), tmp_path / "lem.db"
    stopped: list[psutil.Process] = []

    def stop_first(handle: WorkerHandle) -> None:
        if not stopped:
            stopped.append(psutil.Process(handle.process.pid))
            os.kill(handle.process.pid, signal.SIGSTOP)

    runner, store = run_in_process(
        path, db, stop_first, heartbeat_interval_s=0.2, heartbeat_timeout_s=2.0
    )
    with store:
        outcome = runner.run()
        states = store.cycle_states(outcome.campaign_id)
    assert outcome.failures == [] and outcome.measured == 2
    assert states[(0, 0)][:2] == ("ok", 2)  # long before the experiment's 60 s timeout
    assert "sent no heartbeat for 2 s and was killed" in str(states[(0, 0)][2])
    assert_all_gone(stopped, timeout_s=2)


def test_hung_experiment_fails_after_max_attempts_exit_1_with_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_SLEEP_HANG", "batch_size=2")
    path, db = campaign_file(tmp_path, window_s=0.2, timeout_s=1, cycles=1), tmp_path / "lem.db"
    done = lem("campaign", str(path), "--store", str(db), "--max-attempts", "3")
    assert done.returncode == 1, done.stderr
    tail = done.stderr.splitlines()[-2:]
    assert tail[0].startswith("lem: 1 cycle(s) failed in campaign c-")
    assert tail[1] == "  batch_size=2 cycle 0: timed out after 1 s (attempts: 3)"
    assert query(db, "SELECT status, attempts, failure_reason FROM measurements ORDER BY 1") == [
        ("failed", 3, "timed out after 1 s"),
        ("ok", 1, None),
    ]


def test_the_campaign_file_sets_max_attempts_and_the_cli_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_SLEEP_HANG", "batch_size=2")
    path = campaign_file(tmp_path, window_s=0.2, timeout_s=1, cycles=1)
    path.write_text(path.read_text() + "max_attempts: 1\n")
    done = lem("campaign", str(path), "--store", str(tmp_path / "a.db"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith("timed out after 1 s (attempts: 1)")
    done = lem("campaign", str(path), "--store", str(tmp_path / "b.db"), "--max-attempts", "2")
    assert done.stderr.splitlines()[-1].endswith("timed out after 1 s (attempts: 2)")
    path.write_text(path.read_text().replace("max_attempts: 1", "max_attempts: 0"))
    done = lem("campaign", str(path), "--store", str(tmp_path / "c.db"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lem: error: {path}: max_attempts: must be >= 1, got 0"
    ]


def test_journalled_result_missing_from_the_store_is_ingested_not_rerun(
    tmp_path: Path,
) -> None:
    path, db = campaign_file(tmp_path, window_s=0.2, cycles=1), tmp_path / "lem.db"
    runner, store = run_in_process(path, db)
    with store:
        campaign_id = runner.run().campaign_id
    [(started_at_unix_s,)] = query(
        db, "SELECT m.started_at_unix_s FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id WHERE e.position = 1",
    )  # fmt: skip
    # As if the coordinator died after the worker journalled the result, before storing it.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        "DELETE FROM measurements WHERE experiment_id IN"
        " (SELECT id FROM experiments WHERE position = 1)"
    )
    conn.execute("UPDATE campaigns SET status = 'running'")
    conn.commit()
    conn.close()

    runner, store = run_in_process(path, db)
    with store:
        outcome = runner.run(resumable(store, campaign_id))
        assert ingest_journals(store, campaign_id, run_dir(db, campaign_id) / "journals") == 0
    assert (outcome.ingested, outcome.measured, outcome.failures) == (1, 0, [])
    assert query(
        db, "SELECT m.started_at_unix_s FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id WHERE e.position = 1",
    ) == [(started_at_unix_s,)]  # fmt: skip
    assert ok_pairs(db) == [(0, 0), (1, 0)]
    assert query(db, "SELECT status FROM campaigns") == [("finished",)]


def test_resume_refuses_a_changed_file_unless_forced(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.1, cycles=1), tmp_path / "lem.db"
    nothing = lem("campaign", str(path), "--resume", "--store", str(db))
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
    assert "nothing to resume" in nothing.stderr
    plan = plan_campaign(path)
    with Store(db) as store:
        campaign_id = store.create_campaign(
            plan.name, str(path.resolve()), plan.source_hash, 1, experiment_count=2
        )
        store.finish_campaign(campaign_id, "interrupted")
    path.write_text(path.read_text() + "# edited\n")

    for args in (("campaign", str(path), "--resume"), ("resume", campaign_id)):
        refused = lem(*args, "--store", str(db))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"changed since campaign {campaign_id} started" in refused.stderr
    assert query(db, "SELECT count(*) FROM measurements") == [(0,)]

    forced = lem("campaign", str(path), "--resume", "--force", "--store", str(db))
    assert forced.returncode == 0, forced.stderr
    assert ok_pairs(db) == [(0, 0), (1, 0)]
    assert query(db, "SELECT id, status FROM campaigns") == [(campaign_id, "finished")]
    finished = lem("resume", campaign_id, "--store", str(db))
    assert finished.returncode == 2 and "finished: nothing to resume" in finished.stderr


def test_resume_of_a_campaign_whose_file_is_gone_uses_the_stored_text(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.1, cycles=1), tmp_path / "lem.db"
    plan = plan_campaign(path)
    with Store(db) as store:
        campaign_id = store.create_campaign(
            plan.name, str(path.resolve()), plan.source_hash, 1,
            source_text=path.read_text(), experiment_count=2,
        )  # fmt: skip
        store.finish_campaign(campaign_id, "interrupted")
    path.unlink()
    done = lem("resume", campaign_id, "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert ok_pairs(db) == [(0, 0), (1, 0)]


def test_an_interrupted_lem_run_resumes_with_lem_resume(tmp_path: Path) -> None:
    experiment, db = tmp_path / "one.yaml", tmp_path / "lem.db"
    experiment.write_text(
        "name: one\ndevice: cpu\nmodel: {source: builtin, name: lem-tiny}\n"
        "num_prompts: 1\noutput_tokens: 50\nwarmup_batches: 0\nmin_window_s: 0.4\n"
    )
    coordinator = start_lem("run", str(experiment), "--cycles", "3", "--store", str(db))
    wait_until(lambda: stored_ok(db) >= 1, 30, "a first stored result")
    coordinator.send_signal(signal.SIGTERM)
    coordinator.communicate(timeout=30)
    assert coordinator.returncode == 130
    [(campaign_id, status)] = query(db, "SELECT id, status FROM campaigns")
    assert status == "interrupted" and stored_ok(db) < 3
    done = lem("resume", str(campaign_id), "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert ok_pairs(db) == [(0, 0), (0, 1), (0, 2)]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("grouped", [(0, 0), (0, 1), (1, 0), (1, 1)]),
        ("interleaved", [(0, 0), (1, 0), (0, 1), (1, 1)]),
    ],
)
def test_a_run_follows_the_campaign_order(
    tmp_path: Path, order: str, expected: list[tuple[int, int]]
) -> None:
    path = campaign_file(tmp_path, window_s=0.05, cycles=2)
    path.write_text(path.read_text() + f"order: {order}\n")
    db = tmp_path / "lem.db"
    assert lem("campaign", str(path), "--store", str(db)).returncode == 0
    run_order = query(
        db,
        "SELECT e.position, m.cycle FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id ORDER BY m.started_at_unix_s",
    )
    assert run_order == expected


def test_each_stored_experiment_keeps_its_fields_provenance(tmp_path: Path) -> None:
    path = campaign_file(tmp_path, window_s=0.05, cycles=1)
    db = tmp_path / "lem.db"
    done = lem("campaign", str(path), "--store", str(db), "--set", "ignore_eos=true")
    assert done.returncode == 0
    rows = query(db, "SELECT position, provenance_json FROM experiments ORDER BY position")
    assert [position for position, _ in rows] == [0, 1]
    for _, provenance_json in rows:
        provenance = json.loads(str(provenance_json))
        assert provenance["batch_size"] == "grid.batch_size"
        assert provenance["output_tokens"] == str(path)  # set by the campaign file
        assert provenance["greedy"] == "default"
        assert provenance["ignore_eos"] == "cli"
