"""An unexpected error mid-campaign leaves it resumable (issue 15), never ``finished``: the
campaign is stored ``failed`` with the error, ``lem results list/show`` show it, ``lem
campaign`` ends with one line saying how to resume, and a successful resume clears it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lem.coordinator.cli.main import main
from lem.coordinator.cli.progress import CampaignProgress
from lem.coordinator.execution.resume import resumable
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store
from tests.faults.test_resume_faults import PLANNED, SLEEP_BACKEND, campaign_file, ok_pairs


class Boom(RuntimeError):
    pass


def lem(db: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, [*args, "--store", str(db)], env={"COLUMNS": "200"}, catch_exceptions=False
    )


def shown(db: Path, *args: str) -> str:
    done = lem(db, *args)
    assert done.exit_code == 0, done.output
    return done.stdout


def stored(db: Path) -> tuple[str, str, str | None]:
    conn = sqlite3.connect(db)
    try:
        [row] = conn.execute("SELECT id, status, error FROM campaigns").fetchall()
    finally:
        conn.close()
    return row


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
        campaign_id, status, error = stored(db)
        assert (status, error) == ("failed", "Boom: mistyped interpreter")
        assert (runner.campaign_id, runner.stopped_by) == (campaign_id, error)

        listed = shown(db, "results", "list")
        assert "failed (error) [1]" in listed
        assert "[1] stopped by an unexpected error: Boom: mistyped interpreter" in listed
        assert (
            "Stopped by an unexpected error: Boom: mistyped interpreter "
            f"(go on with: lem resume {campaign_id})"
        ) in shown(db, "results", "show", campaign_id)

        campaign = resumable(store, campaign_id)  # not refused as finished
        assert len(ok_pairs(db)) == 2
        outcome = CampaignRunner(
            plan_campaign(path), store, RunOptions(store_path=db, max_parallel=1)
        ).run(resume=campaign)
    assert outcome.failures == [] and ok_pairs(db) == sorted(PLANNED)
    assert stored(db) == (campaign_id, "finished", None)  # the resume cleared the error
    assert "unexpected error" not in shown(db, "results", "list")
    assert "unexpected error" not in shown(db, "results", "show", campaign_id)


def test_lem_campaign_ends_with_one_line_saying_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    path, db = campaign_file(tmp_path, window_s=0.2, cycles=1), tmp_path / "lem.db"

    def boom(*_args: object) -> None:
        raise Boom("mistyped\ninterpreter \x1b[2J")

    monkeypatch.setattr(CampaignProgress, "on_cycle_done", boom)
    done = lem(db, "-q", "campaign", str(path), "--max-parallel", "1")
    campaign_id, status, error = stored(db)
    assert (done.exit_code, status) == (1, "failed"), done.output
    assert error == "Boom: mistyped interpreter \x1b[2J"  # one line; escaped when shown
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"lem: error: campaign {campaign_id} stopped by an unexpected error: Boom: mistyped "
        "interpreter \\x1b[2J; stored results are kept and it is resumable "
        f"(go on with: lem resume {campaign_id})"
    )

    monkeypatch.undo()  # the progress hook works again
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    resumed = lem(db, "-q", "resume", campaign_id)
    assert resumed.exit_code == 0, resumed.output
    assert stored(db) == (campaign_id, "finished", None)
