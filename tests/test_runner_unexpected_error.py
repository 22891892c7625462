"""An unexpected error mid-campaign leaves it resumable (issue 15), never ``finished``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lem.coordinator.execution.resume import resumable
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store
from tests.faults.test_resume_faults import PLANNED, SLEEP_BACKEND, campaign_file, ok_pairs


class Boom(RuntimeError):
    pass


def test_an_unexpected_error_leaves_the_campaign_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    path, db = campaign_file(tmp_path, window_s=0.2), tmp_path / "lem.db"
    done: list[int] = []

    def fail_after_two(*_args: object) -> None:
        done.append(1)
        if len(done) == 2:
            raise Boom("mistyped interpreter")

    with Store(db) as store:
        runner = CampaignRunner(
            plan_campaign(path), store, RunOptions(store_path=db, max_parallel=1),
            on_cycle_done=fail_after_two,
        )  # fmt: skip
        with pytest.raises(Boom):
            runner.run()
        [(campaign_id, status)] = (
            sqlite3.connect(db).execute("SELECT id, status FROM campaigns").fetchall()
        )
        assert status == "failed"
        campaign = resumable(store, campaign_id)  # not refused as finished
        assert len(ok_pairs(db)) == 2
        outcome = CampaignRunner(
            plan_campaign(path), store, RunOptions(store_path=db, max_parallel=1)
        ).run(resume=campaign)
    assert outcome.failures == [] and ok_pairs(db) == sorted(PLANNED)
