"""Opening a store that other lem processes may be creating at the same moment.

Two races seen when campaigns start together on one new store file (issue 15's shared-store
guarantee; `tests/faults/test_store_opening_race.py`):

- ``PRAGMA journal_mode = WAL`` needs the file's exclusive lock and SQLite answers "database
  is locked" at once, without waiting out the busy timeout, while another connection is
  switching or creating: ``set_wal`` tries again until the timeout.
- "is this another application's file?" asked as two queries could see no ``schema_meta``
  table, then the tables another process had just created: ``foreign_tables`` asks once,
  one snapshot.
"""

from __future__ import annotations

import random
import sqlite3
import time


def set_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch ``conn``'s file to WAL, retrying while another connection holds the lock."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        try:  # the answer is the mode now: "memory" for ":memory:", which has no WAL
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or (
                time.monotonic() > deadline_s
            ):
                raise
        time.sleep(0.01 + random.random() * 0.04)  # apart from the others trying too


def foreign_tables(conn: sqlite3.Connection) -> bool:
    """True when the file has tables but no lem ``schema_meta`` (one query, one snapshot)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return bool(names) and "schema_meta" not in names
