"""Store schema 6: ``campaigns.error``, the unexpected error that stopped a campaign (issue
15). Stored one line and bounded, only with ``failed``, cleared when the campaign is
reopened or finished otherwise, shown escaped; a schema-5 store reads unchanged and is
migrated when opened for writing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from lem.coordinator.cli.main import main
from lem.coordinator.store.results_store import Store, StoreError
from lem.coordinator.store.schema import CAMPAIGN_ERROR_MAX_CHARS, SCHEMA_VERSION
from lem.coordinator.store.state import error_text
from tests.test_store import drop_version_6, make_campaign, measurement


def shown(db: Path, *args: str) -> str:
    done = CliRunner().invoke(
        main, [*args, "--store", str(db)], env={"COLUMNS": "200"}, catch_exceptions=False
    )
    assert done.exit_code == 0, done.output
    return done.stdout


def stored_error(db: Path, campaign_id: str) -> tuple[str, str | None]:
    conn = sqlite3.connect(db)
    try:
        query = "SELECT status, error FROM campaigns WHERE id = ?"
        [row] = conn.execute(query, (campaign_id,)).fetchall()
    finally:
        conn.close()
    return row


def test_error_text_is_type_and_message_on_one_bounded_line() -> None:
    assert error_text(RuntimeError("mistyped interpreter")) == "RuntimeError: mistyped interpreter"
    assert error_text(KeyError()) == "KeyError"
    assert error_text(ValueError("one\n  two\tthree\r\n")) == "ValueError: one two three"
    long = error_text(OSError("x" * 10_000))
    assert len(long) == CAMPAIGN_ERROR_MAX_CHARS and long.startswith("OSError: xx")
    assert long.endswith("x…")


def test_an_error_is_stored_only_with_failed_and_cleared_otherwise(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        campaign_id, _ = make_campaign(store)
        with pytest.raises(StoreError, match="only with status failed"):
            store.finish_campaign(campaign_id, "interrupted", "RuntimeError: no")
        store.finish_campaign(campaign_id, "failed", "RuntimeError: boom")
        assert stored_error(db, campaign_id) == ("failed", "RuntimeError: boom")
        [summary] = store.list_campaigns()
        assert summary.error == "RuntimeError: boom"
        assert store.campaign_detail(campaign_id).campaign.error == "RuntimeError: boom"
        store.reopen_campaign(campaign_id, "abc123", None, 1)  # a resume starts
        assert stored_error(db, campaign_id) == ("running", None)
        store.finish_campaign(campaign_id, "failed", "RuntimeError: again")
        store.finish_campaign(campaign_id, "finished")
        assert stored_error(db, campaign_id) == ("finished", None)


def test_the_stored_error_is_shown_escaped(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        campaign_id, _ = make_campaign(store)
        store.finish_campaign(campaign_id, "failed", "RuntimeError: bad \x1b[2J[bold]x\x07")
    listed = shown(db, "results", "list")
    assert "failed (error) [1]" in listed
    assert "stopped by an unexpected error: RuntimeError: bad \\x1b[2J[bold]x\\x07" in listed
    detail = shown(db, "results", "show", campaign_id)
    assert (
        "Stopped by an unexpected error: RuntimeError: bad \\x1b[2J[bold]x\\x07 "
        f"(go on with: lem resume {campaign_id})"
    ) in detail
    assert "\x1b" not in listed + detail and "\x07" not in listed + detail


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema_5_store(db: Path) -> tuple[str, str]:
    """A store as schema 5 left it: no ``campaigns.error``; one failed campaign with an ok
    cycle, one finished. Returns their ids."""
    with Store(db) as store:
        failed, exp = make_campaign(store)
        assert store.record_measurement(measurement(exp, 0))
        store.finish_campaign(failed, "failed")
        finished, _ = make_campaign(store)
        store.finish_campaign(finished, "finished")
    conn = sqlite3.connect(db)
    drop_version_6(conn)
    conn.execute("UPDATE schema_meta SET schema_version = 5")
    conn.commit()
    conn.close()
    return failed, finished


def test_a_schema_5_store_reads_unchanged_and_is_migrated_when_written(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "lem.db"
    failed, finished = schema_5_store(db)
    before = digest(db)
    with Store.read_only(db) as store:
        assert [(c.id, c.status, c.error) for c in store.list_campaigns()] == [
            (failed, "failed", None), (finished, "finished", None),
        ]  # fmt: skip
    listed = shown(db, "results", "list")
    detail = shown(db, "results", "show", failed)
    assert failed in listed and "failed" in listed and "(error)" not in listed
    assert "1 ok, 0 failed" in detail and "unexpected error" not in detail
    assert digest(db) == before and [p.name for p in folder.iterdir()] == ["lem.db"]

    with Store(db) as store:  # opened for writing: migrated in place
        assert store.schema_version() == SCHEMA_VERSION == 6
        assert store.campaign_detail(failed).campaign.error is None
        store.finish_campaign(failed, "failed", "RuntimeError: after the upgrade")
    assert stored_error(db, failed) == ("failed", "RuntimeError: after the upgrade")
    assert "RuntimeError: after the upgrade" in shown(db, "results", "show", failed)
