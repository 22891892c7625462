"""The store's resume bookkeeping: lazy experiment rows, cycle states, idempotent results,
and the version 3 → 4 migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lem.coordinator.store.results_store import Store, new_id
from lem.coordinator.store.schema import SCHEMA_VERSION
from lem.protocol.config import ExperimentConfig, load_key
from tests.test_store import drop_version_4, measurement, rows


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "lem.db")


def lazy_campaign(store: Store, planned: int = 1_000_000, cycles: int = 3) -> str:
    return store.create_campaign(
        "lazy", "c.yaml", "h1", cycles, source_text="name: lazy\n", experiment_count=planned
    )


def test_a_million_planned_points_store_no_experiment_rows_up_front(
    store: Store, tmp_path: Path
) -> None:
    campaign_id = lazy_campaign(store)
    [summary] = store.list_campaigns()
    assert summary.experiment_count == 1_000_000
    assert rows(tmp_path / "lem.db", "SELECT count(*) FROM experiments") == [(0,)]
    found = store.stored_campaign(campaign_id)
    assert found is not None and found.source_text == "name: lazy\n"


def test_ensure_experiment_inserts_once_per_position(store: Store) -> None:
    campaign_id = lazy_campaign(store)
    cfg = ExperimentConfig(name="p7")
    first = store.ensure_experiment(campaign_id, 7, new_id("e"), cfg, load_key(cfg))
    again = store.ensure_experiment(campaign_id, 7, new_id("e"), cfg, load_key(cfg))
    assert first == again
    assert store.experiment_positions(campaign_id) == {first: 7}


def test_results_are_stored_once_and_ok_replaces_failed(store: Store, tmp_path: Path) -> None:
    campaign_id = lazy_campaign(store)
    cfg = ExperimentConfig()
    exp = store.ensure_experiment(campaign_id, 0, new_id("e"), cfg, load_key(cfg))
    assert store.start_attempt(campaign_id, 0, 1, exp) == 1
    assert store.record_failure(exp, 1, "timed out after 5 s", "w1", attempts=1)
    assert store.cycle_states(campaign_id) == {(0, 1): ("failed", 1, "timed out after 5 s")}
    assert store.start_attempt(campaign_id, 0, 1, exp) == 2
    assert store.record_measurement(measurement(exp, 1), attempts=2)
    assert not store.record_measurement(measurement(exp, 1))  # idempotent
    assert not store.record_failure(exp, 1, "late", "w2")  # an ok result is final
    assert store.ok_pairs(campaign_id) == {(0, 1)}
    assert store.cycle_states(campaign_id)[(0, 1)][:2] == ("ok", 2)
    [record] = store.experiment_measurements(exp)
    assert (record.status, record.attempts) == ("ok", 2)
    assert rows(tmp_path / "lem.db", "SELECT count(*) FROM measurements") == [(1,)]
    with pytest.raises(sqlite3.IntegrityError):  # the unique constraint backs it
        conn = sqlite3.connect(tmp_path / "lem.db")
        conn.execute(
            "INSERT INTO measurements (experiment_id, cycle, status, failure_reason,"
            " recorded_at_unix_s) VALUES (?, 1, 'failed', 'x', 0)",
            (exp,),
        )


def test_running_cycles_become_interrupted_and_the_campaign_reopens(store: Store) -> None:
    campaign_id = lazy_campaign(store, planned=2, cycles=1)
    cfg = ExperimentConfig()
    exp = store.ensure_experiment(campaign_id, 1, new_id("e"), cfg, load_key(cfg))
    store.start_attempt(campaign_id, 1, 0, exp)
    store.finish_campaign(campaign_id, "interrupted")
    assert store.interrupt_running(campaign_id) == 1
    assert store.cycle_states(campaign_id)[(1, 0)][0] == "interrupted"
    assert [c.id for c in store.unfinished_campaigns()] == [campaign_id]
    store.reopen_campaign(campaign_id, "h2", "name: lazy # edited\n", 2)
    found = store.stored_campaign(campaign_id)
    assert found is not None and (found.status, found.source_hash) == ("running", "h2")
    store.finish_campaign(campaign_id, "finished")
    assert store.unfinished_campaigns() == []


def test_a_version_3_store_is_migrated_to_4(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    cfg = ExperimentConfig()
    exp = new_id("e")
    with Store(db) as store:
        old = store.create_campaign("old", "o.yaml", "h", 2, [(exp, cfg, load_key(cfg))])
        assert store.record_measurement(measurement(exp, 0))
    conn = sqlite3.connect(db)
    drop_version_4(conn)
    conn.execute("UPDATE schema_meta SET schema_version = 3")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == 6
        [record] = store.experiment_measurements(exp)
        assert record.status == "ok" and record.attempts is None
        assert store.ok_pairs(old) == {(0, 0)}
        found = store.stored_campaign(old)
        assert found is not None and found.source_text is None
        assert store.start_attempt(old, 0, 1, exp) == 1
        new = store.ensure_experiment(old, 1, new_id("e"), cfg, load_key(cfg), {"seed": "cli"})
    [(provenance_json,)] = (
        sqlite3.connect(db)
        .execute("SELECT provenance_json FROM experiments WHERE id = ?", (new,))
        .fetchall()
    )
    assert provenance_json == '{"seed": "cli"}'  # the column the migration added
