"""Campaigns across the nodes of a real Ray cluster on this machine (tests/cluster/
local_ray.py: a head and two worker nodes, each with one replayed GPU of its own UUID, the
sleep engine): the exact planned result set, faster than one node; a worker node killed
mid-cycle (the cycle runs again on the other node, once); the coordinator killed with
SIGKILL (``lem resume`` completes, from the journals gathered from the nodes)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.local_ray import LocalRayCluster, gpu_uuid, short_root, wait_for

pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
pytestmark = pytest.mark.cluster

EXPERIMENTS = 12
CAMPAIGN = f"""\
name: on-ray
experiment:
  model: {{source: builtin, name: lem-tiny}}
  device: cuda
  num_prompts: 2
  output_tokens: 50
  warmup_batches: 0
  min_window_s: 2.5
  idle_baseline: {{window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}}
grid: {{batch_size: {list(range(1, EXPERIMENTS + 1))}}}
cycles: 1
"""
LEM = [sys.executable, "-m", "lem.coordinator", "--log-json"]


def _cluster() -> Iterator[LocalRayCluster]:
    local = LocalRayCluster(short_root())
    try:
        local.start()
        yield local
    finally:
        local.stop()


# One cluster for the tests that leave it whole; the node-killing test gets its own.
cluster = pytest.fixture(scope="module")(_cluster)
own_cluster = pytest.fixture(_cluster)


def _campaign(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("LEM_NVML_REPLAY", "LEM_WORKER_BACKEND"):  # the nodes have their own
        env.pop(name, None)
    return env


def _rows(db: Path) -> list[tuple[int, int, str, int, str]]:
    """(position, cycle, status, attempts, GPU UUIDs) of every stored measurement."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT e.position, m.cycle, m.status, m.attempts, m.payload_json"
            " FROM measurements m JOIN experiments e ON e.id = m.experiment_id"
        ).fetchall()
    return [
        (p, c, s, a, ",".join(g["uuid"] for g in json.loads(payload)["environment"]["gpus"]))
        for p, c, s, a, payload in rows
    ]


def _run(*args: str, timeout_s: float = 300) -> tuple[subprocess.CompletedProcess[str], float]:
    started_s = time.monotonic()
    done = subprocess.run([*LEM, *args], capture_output=True, text=True, timeout=timeout_s,
                          env=_env())  # fmt: skip
    return done, time.monotonic() - started_s


def test_a_campaign_spreads_over_the_nodes_exactly_once_and_faster(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    campaign = _campaign(tmp_path)
    one, one_s = _run("campaign", str(campaign), "--store", str(tmp_path / "one.db"),
                      "--cluster", cluster.address, "--max-parallel", "1")  # fmt: skip
    assert one.returncode == 0, one.stderr
    both, both_s = _run("campaign", str(campaign), "--store", str(tmp_path / "both.db"),
                        "--cluster", cluster.address)  # fmt: skip
    assert both.returncode == 0, both.stderr
    rows = _rows(tmp_path / "both.db")
    assert sorted((p, c) for p, c, *_ in rows) == [(p, 0) for p in range(EXPERIMENTS)]
    assert all(s == "ok" and a == 1 for _, _, s, a, _ in rows)
    assert {g for *_, g in rows} == {gpu_uuid("a"), gpu_uuid("b")}  # both nodes measured
    assert both_s <= 0.6 * one_s, (both_s, one_s)
    # every worker journalled on its node; the run folder holds the gathered copies
    with sqlite3.connect(tmp_path / "both.db") as con:
        [(campaign_id,)] = con.execute("SELECT id FROM campaigns").fetchall()
    run = tmp_path / "runs" / campaign_id
    gathered = sorted(p.name for p in (run / "journals").glob("*.jsonl"))
    assert len(gathered) == 2 and any("GPU-aaaaaaaa" in n for n in gathered)
    for name in ("a", "b"):
        assert list((cluster.nodes[name] / "lem" / "ray-runs" / run.name / "journals").glob(
            "*.jsonl"))  # fmt: skip


def _start(campaign: Path, db: Path, cluster: LocalRayCluster) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LEM, "campaign", str(campaign), "--store", str(db), "--cluster", cluster.address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip


def _events(proc: subprocess.Popen[str]) -> Iterator[dict[str, object]]:
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            yield json.loads(line)
        except ValueError:
            continue


@pytest.mark.cluster_faults
def test_the_coordinator_killed_then_resumed_completes_from_the_nodes_journals(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    db = tmp_path / "lem.db"
    proc = _start(_campaign(tmp_path), db, cluster)
    try:
        for event in _events(proc):
            if event.get("event") == "measured":
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    with sqlite3.connect(db) as con:
        [(campaign_id, status)] = con.execute("SELECT id, status FROM campaigns").fetchall()
    assert status == "running"
    # the workers die with the driver: Ray ends its actors, each worker its parent's death
    wait_for(lambda: not _lem_workers(), 30, "the workers to end")
    done, _ = _run("resume", campaign_id, "--store", str(db), "--cluster", cluster.address)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    gathered = [e for e in events if e.get("event") == "journals gathered"]
    assert gathered and int(str(gathered[0]["files"])) >= 1
    rows = _rows(db)
    assert sorted((p, c) for p, c, *_ in rows) == [(p, 0) for p in range(EXPERIMENTS)]
    assert all(s == "ok" for _, _, s, _, _ in rows)


def _lem_workers() -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "lem.workers" in cmdline and "--endpoint" in cmdline:
            found.append(proc.pid)
    return found


@pytest.mark.parametrize("address", ["127.0.0.1:1", "no-port", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_is_one_line_and_stores_nothing(
    tmp_path: Path, address: str
) -> None:
    store = tmp_path / "store" / "lem.db"
    done, took_s = _run("campaign", str(_campaign(tmp_path)), "--store", str(store),
                        "--cluster", address, timeout_s=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"lem: error: --cluster {address}: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not store.parent.exists() and took_s < 30


@pytest.mark.cluster_faults
def test_a_worker_node_killed_mid_cycle_moves_its_cycle_once(
    own_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    cluster, db = own_cluster, tmp_path / "lem.db"
    proc = _start(_campaign(tmp_path), db, cluster)
    try:
        for event in _events(proc):
            on_b = gpu_uuid("b")[:12] in str(event.get("worker") or "")
            if event.get("event") == "measuring" and on_b:
                break  # a cycle on node b is in its 2.5 s window
        cluster.kill_node("b")
        rest = proc.communicate(timeout=240)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    rows = _rows(db)
    assert sorted((p, c) for p, c, *_ in rows) == [(p, 0) for p in range(EXPERIMENTS)]
    assert all(s == "ok" for _, _, s, _, _ in rows)
    moved = [r for r in rows if r[3] == 2]
    assert len(moved) == 1 and moved[0][4] == gpu_uuid("a"), rows
    assert "node lost: the cycle runs again elsewhere" in rest
