"""Many lem processes opening one new store file at the same moment (coordinator/store/
opening.py): before the fix about one round in five of six openers had one fail, either
"database is locked" from the switch to WAL (SQLite answers it at once there, without the
busy timeout) or "an SQLite database but not a lem store" (the foreign-file check asked in
two queries saw another opener's fresh tables)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from lem.coordinator.store.opening import foreign_tables
from lem.coordinator.store.results_store import Store, StoreError

OPENERS, ROUNDS = 6, 25


def open_together(path: Path) -> list[str]:
    barrier = threading.Barrier(OPENERS)
    errors: list[str] = []

    def opener() -> None:
        barrier.wait()
        try:
            Store(path).close()
        except StoreError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=opener) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_openers_of_one_new_store_all_open_it(tmp_path: Path) -> None:
    failed = {}
    for round_ in range(ROUNDS):
        path = tmp_path / f"r{round_}" / "lem.db"
        errors = open_together(path)
        if errors:
            failed[round_] = errors
    assert not failed, failed
    with sqlite3.connect(tmp_path / "r0" / "lem.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_in_memory_store_still_opens() -> None:
    # it has no WAL: the switch answers "memory", which must not be waited on
    with Store(":memory:") as store:
        assert store.schema_version() > 0


@pytest.mark.parametrize(
    ("statements", "foreign"),
    [
        ([], False),
        (["CREATE TABLE schema_meta (id INTEGER)", "CREATE TABLE runs (x)"], False),
        (["CREATE TABLE notes (text TEXT)"], True),
    ],
)
def test_a_file_is_foreign_when_it_has_tables_but_no_schema_meta(
    tmp_path: Path, statements: list[str], foreign: bool
) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    for statement in statements:
        conn.execute(statement)
    assert foreign_tables(conn) is foreign
    conn.close()
