"""Run one experiment file through the real CLI (coordinator, worker process, store) and
read back its single stored cycle with the per-request latency table."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lem.coordinator.store.results_store import Store
from lem.coordinator.store.schema import ExperimentSummary, MeasurementRecord
from lem.protocol.latency import RequestRecord


@dataclass(frozen=True)
class RunOutcome:
    """One stored cycle: its record, its experiment's summary, its request rows, the
    store's path and what ``lem run`` printed."""

    record: MeasurementRecord
    summary: ExperimentSummary
    requests: list[RequestRecord]
    db: Path
    stdout: str


def lem_run_one(tmp_path: Path, experiment_yaml: str, timeout_s: float) -> RunOutcome:
    """``lem run`` of ``experiment_yaml`` into a fresh store, read back; fails the test on
    a non-zero exit."""
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(experiment_yaml)
    db = tmp_path / "lem.db"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(experiment), "--store", str(db)],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        [campaign] = store.list_campaigns()
        [summary] = store.campaign_detail(campaign.id).experiments
        [record] = store.experiment_measurements(summary.id)
        requests = store.request_records(summary.id, 0)
    return RunOutcome(record, summary, requests, db, done.stdout)
