"""Parallel experiments on disjoint GPU sets: the allocator alone, then real coordinators and
workers on CPU with a replayed two-GPU NVML and the sleep backend (``device: cuda``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from lem.coordinator.execution.allocator import AllocationStopped, GpuAllocator
from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.lanes import LanePool
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.execution.supervisor import WorkerHandle
from lem.coordinator.planning.campaign import PlannedExperiment, plan_campaign
from lem.coordinator.planning.dispatch_plan import planned_cycles
from lem.coordinator.store.results_store import Store
from lem.protocol.devices.nvml_replay import write_steady_trace
from lem.protocol.messages import Progress
from tests.faults.test_resume_faults import (
    SLEEP_BACKEND,
    assert_all_gone,
    descendants,
    lem,
    query,
    start_lem,
    stored_ok,
    wait_until,
)

UUIDS = ("GPU-replay-par-0", "GPU-replay-par-1")
CAMPAIGN = """\
name: parallel
experiment:
  device: cuda
  gpu_count: 1
  model: {{source: builtin, name: lem-tiny}}
  input_tokens: 4
  output_tokens: 50
  num_prompts: 2
  warmup_batches: 0
  min_window_s: {window_s}
  idle_baseline: {{window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}}
grid:
  batch_size: [1, 2]
cycles: {cycles}
"""


@pytest.fixture(autouse=True)
def replayed_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    monkeypatch.setenv(
        "LEM_NVML_REPLAY",
        str(write_steady_trace(tmp_path / "two_gpus.jsonl", UUIDS, "parallel lanes on CPU")),
    )


def campaign_file(tmp_path: Path, window_s: float = 1.0, cycles: int = 1, extra: str = "") -> Path:
    path = tmp_path / "parallel.yaml"
    path.write_text(CAMPAIGN.format(window_s=window_s, cycles=cycles) + extra)
    return path


def windows(db: Path) -> list[tuple[int, str, str, float, float]]:
    """(position, worker id, GPU UUID, start, end) of every ok measurement (unix s)."""
    rows = query(
        db,
        "SELECT e.position, m.worker_id, g.gpu_uuid, m.started_at_unix_s, m.duration_s"
        " FROM measurements m JOIN experiments e ON e.id = m.experiment_id"
        " JOIN gpu_energy g ON g.measurement_id = m.id WHERE m.status = 'ok' ORDER BY 1, 2",
    )
    return [
        (int(str(p)), str(w), str(g), float(str(s)), float(str(s)) + float(str(d)))
        for p, w, g, s, d in rows
    ]


# ---- the allocator alone ------------------------------------------------------------


def test_allocator_hands_out_disjoint_sets_and_prefers_a_live_workers_set() -> None:
    pool = GpuAllocator(["a", "b", "c"])
    assert pool.lanes([1]) == 3 and pool.lanes([2, 1]) == 3 and pool.lanes([2]) == 1
    assert pool.lanes([0]) == 1 and pool.lanes([0, 1]) == 4
    first = pool.acquire(1)
    second = pool.acquire(1, preferred=[GpuAssignment(("a",)), GpuAssignment(("c",))])
    assert (first.gpu_uuids, second.gpu_uuids) == (("a",), ("c",))
    pool.release(first)
    assert pool.acquire(2).gpu_uuids == ("a", "b")
    with pytest.raises(ValueError, match="needs 4 GPU"):
        pool.acquire(4)
    with pytest.raises(TimeoutError):
        pool.acquire(1, timeout_s=0.05)
    assert pool.acquire(0).gpu_uuids == ()  # the CPU slot
    with pytest.raises(TimeoutError):
        pool.acquire(0, timeout_s=0.05)


def test_allocator_blocks_until_enough_gpus_are_free_and_stop_wakes_waiters() -> None:
    pool = GpuAllocator(["a", "b"])
    held = pool.acquire(1)
    got: list[GpuAssignment] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(2)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # one GPU is busy: the two-GPU request waits
    pool.release(held)
    waiter.join(2)
    assert got and got[0].gpu_uuids == ("a", "b")
    errors: list[BaseException] = []

    def wait_stopped() -> None:
        try:
            pool.acquire(1)
        except AllocationStopped as exc:
            errors.append(exc)

    stopped = threading.Thread(target=wait_stopped)
    stopped.start()
    pool.stop()
    stopped.join(2)
    assert errors


def test_lane_threads_outlive_their_work_until_the_pool_is_closed(tmp_path: Path) -> None:
    """A worker dies with the thread that launched it (PR_SET_PDEATHSIG): a lane that runs out
    of work must not end while another lane may use its worker or before it is stopped."""
    before = set(threading.enumerate())
    ran: list[int] = []

    def run_cycle(exp: PlannedExperiment, _cycle: int, _gpus: GpuAssignment) -> bool:
        ran.append(exp.position)
        return True

    pairs = iter(planned_cycles(plan_campaign(campaign_file(tmp_path))))
    pool = LanePool(2, pairs, lambda _: 1, GpuAllocator(list(UUIDS)), run_cycle, lambda _: [])
    pool.start()
    pool.wait()
    lanes = [t for t in set(threading.enumerate()) - before if t.name.startswith("lem-lane-")]
    assert sorted(ran) == [0, 1] and len(lanes) == 2 and all(t.is_alive() for t in lanes)
    pool.join(1.0)
    assert all(t.is_alive() for t in lanes)
    pool.close()
    assert not any(t.is_alive() for t in lanes)


# ---- real coordinators and workers --------------------------------------------------


def test_two_one_gpu_experiments_run_at_once_on_different_gpus(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path), tmp_path / "lem.db"
    done = lem("campaign", str(path), "--store", str(db))
    assert done.returncode == 0, done.stderr
    (p0, w0, g0, s0, e0), (p1, w1, g1, s1, e1) = windows(db)
    assert (p0, p1) == (0, 1) and {g0, g1} == set(UUIDS) and w0 != w1
    assert s0 < e1 and s1 < e0  # the measured windows overlap
    assert query(db, "SELECT status FROM campaigns") == [("finished",)]


def test_max_parallel_1_and_gpus_0_run_one_at_a_time(tmp_path: Path) -> None:
    for args in (["--max-parallel", "1"], ["--gpus", "0"]):
        db = tmp_path / f"lem{len(args[1])}{args[0]}.db"
        path = campaign_file(tmp_path, window_s=0.3)
        done = lem("campaign", str(path), "--store", str(db), *args)
        assert done.returncode == 0, done.stderr
        (_, _, g0, _, e0), (_, _, g1, s1, _) = windows(db)
        assert e0 <= s1, args  # one after the other
        if args[0] == "--gpus":
            assert g0 == g1 == UUIDS[0]


def test_a_two_gpu_experiment_waits_for_both_gpus(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        CAMPAIGN.format(window_s=0.6, cycles=1).replace("batch_size: [1, 2]", "gpu_count: [1, 2]")
    )
    db = tmp_path / "lem.db"
    done = lem("campaign", str(path), "--store", str(db))
    assert done.returncode == 0, done.stderr
    rows = windows(db)
    one = [r for r in rows if r[0] == 0]
    two = [r for r in rows if r[0] == 1]
    assert len(one) == 1 and {r[2] for r in two} == set(UUIDS)
    assert one[0][4] <= min(r[3] for r in two)  # started once the one-GPU cycle ended


def test_sigint_during_a_parallel_run_leaves_no_process_and_resumes(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.8, cycles=3), tmp_path / "lem.db"
    coordinator = start_lem("campaign", str(path), "--store", str(db))
    wait_until(lambda: stored_ok(db) >= 2, 60, "first stored results")
    tree = descendants(coordinator.pid)
    assert len(tree) >= 2  # a worker per GPU
    coordinator.send_signal(signal.SIGINT)
    _, stderr = coordinator.communicate(timeout=30)
    assert coordinator.returncode == 130, stderr
    assert_all_gone(tree, timeout_s=2)
    [(campaign_id, status)] = query(db, "SELECT id, status FROM campaigns")
    assert status == "interrupted"
    assert not query(db, "SELECT 1 FROM cycle_states WHERE state = 'running'")
    assert not query(db, "SELECT 1 FROM measurements WHERE status = 'failed'")
    resumed = lem("resume", str(campaign_id), "--store", str(db))
    assert resumed.returncode == 0, resumed.stderr
    planned = [(p, c) for p in (0, 1) for c in range(3)]
    assert query(
        db, "SELECT e.position, m.cycle FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id WHERE m.status = 'ok' ORDER BY 1, 2",
    ) == planned  # fmt: skip


def test_a_killed_worker_is_retried_while_the_other_lane_goes_on(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.6, cycles=2), tmp_path / "lem.db"
    killed: list[str] = []

    def hook(exp: object, cycle: int, event: Progress, handle: WorkerHandle) -> None:
        if event.phase == "measuring" and not killed and handle.spec.worker_id.startswith("w1-"):
            killed.append(handle.spec.worker_id)
            os.kill(handle.process.pid, signal.SIGKILL)

    threads_before = set(threading.enumerate())
    with Store(db) as store:
        runner = CampaignRunner(
            plan_campaign(path), store, RunOptions(store_path=db), on_progress=hook
        )
        outcome = runner.run()
    assert outcome.failures == [] and outcome.measured == 4 and killed
    left = {t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()}
    assert not left  # neither the hub's I/O thread nor a lane
    attempts = query(db, "SELECT attempts, worker_id FROM measurements ORDER BY attempts")
    assert [a for a, _ in attempts] == [1, 1, 1, 2]
    assert attempts[-1][1] != killed[0]  # retried on a fresh worker
    workers = {str(w) for _, w in attempts}
    assert killed[0] not in workers and len(workers) == 2  # the other lane's worker went on
    assert str(attempts[-1][1]).startswith("w3-")
    assert not [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def test_a_worker_on_gpus_another_worker_needs_is_stopped_before_that_one_starts(
    tmp_path: Path,
) -> None:
    """A one-GPU worker left idle on GPU 0 would hold its model's memory there and show up
    beside the two-GPU worker's measurement: it is stopped before the new worker starts."""
    path = tmp_path / "mixed.yaml"
    path.write_text(
        CAMPAIGN.format(window_s=0.3, cycles=1).replace("batch_size: [1, 2]", "gpu_count: [1, 2]")
    )
    done = lem("--log-json", "campaign", str(path), "--store", str(tmp_path / "lem.db"))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    ready = [e["worker"] for e in events if e["event"] == "worker ready"]
    assert len(ready) == 2  # w1 on one GPU, then w2 on both
    [stop] = [e for e in events if e["event"] == "stopping idle worker"]
    assert (stop["worker"], stop["for_worker"]) == (ready[0], ready[1])
    order = [e["event"] for e in events if e["event"] in ("stopping idle worker", "worker ready")]
    assert order == ["worker ready", "stopping idle worker", "worker ready"]
