"""Reading never writes (issue 15): list, show, export, compare and report open the store
read-only, never migrate it, and leave no -wal/-shm files beside it."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

V4_STORE = Path(__file__).parents[1] / "data" / "store-v4" / "lem.db"


def lem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_commands(db: Path, out: Path, a: str, b: str) -> list[list[str]]:
    store = ["--store", str(db)]
    return [
        ["results", "list", *store],
        ["results", "show", a, *store],
        ["results", "export", *store, "-o", str(out / "x.csv")],
        ["compare", a, b, *store],
        ["report", a, "-o", str(out / "report"), *store],
    ]


def test_a_foreign_sqlite_file_is_refused_and_left_byte_identical(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    before = digest(db)
    for command in read_commands(db, tmp_path, "c-1", "c-2"):
        done = lem(*command)
        assert done.returncode == 2, (command, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (command, done.stderr)
        assert digest(db) == before, command
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"], command


def test_an_empty_file_stays_empty(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    for command in read_commands(db, tmp_path, "c-1", "c-2"):
        done = lem(*command)
        assert done.returncode == 2, (command, done.stderr)
        assert db.stat().st_size == 0, command
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"], command


@pytest.mark.parametrize("read_only_folder", [False, True])
def test_an_old_schema_store_reads_and_stays_byte_identical(
    tmp_path: Path, read_only_folder: bool
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    db = folder / "lem.db"
    shutil.copyfile(V4_STORE, db)
    before = digest(db)
    conn = sqlite3.connect(f"file:{V4_STORE}?immutable=1", uri=True)
    a, b = (row[0] for row in conn.execute("SELECT id FROM campaigns ORDER BY id LIMIT 2"))
    conn.close()
    if read_only_folder:
        db.chmod(0o444)
        folder.chmod(0o555)
    out = tmp_path / "out"
    out.mkdir()
    try:
        for command in read_commands(db, out, a, b):
            done = lem(*command)
            assert done.returncode == 0, (command, done.stderr)
            assert digest(db) == before, command
            assert sorted(p.name for p in folder.iterdir()) == ["lem.db"], command
        assert (out / "x.csv").read_text().startswith("campaign_id,")
        assert (out / "report" / "index.html").is_file()
    finally:
        folder.chmod(0o755)


def test_a_writing_open_of_a_foreign_sqlite_file_refuses_it_unchanged(tmp_path: Path) -> None:
    from lem.coordinator.store.results_store import Store, StoreError

    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = digest(db)
    with pytest.raises(StoreError, match="not a lem store"):
        Store(db)
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


TABLES = (
    "schema_meta", "campaigns", "experiments", "environments", "measurements", "gpu_energy",
    "request_latencies", "cycle_states",
)  # fmt: skip


@pytest.mark.parametrize("version", [3, 4, 5])
def test_an_old_schema_store_is_read_in_place_as_an_upgraded_copy_reads(
    tmp_path: Path, version: int
) -> None:
    """Migrations since schema 3 only add columns and tables: the file is read where it is
    (not copied into memory, however large), every table as the upgraded copy has it."""
    from lem.coordinator.store.reading import _upgraded_copy, connect_read_only

    db = tmp_path / "lem.db"
    shutil.copyfile(V4_STORE, db)
    conn = sqlite3.connect(db)
    if version == 3:  # what schema 4 added (tests.test_store.drop_version_4, less 6's)
        conn.execute("DROP TABLE cycle_states")
        for column in ("source_text", "coordinator_host", "coordinator_pid"):
            conn.execute(f"ALTER TABLE campaigns DROP COLUMN {column}")
        conn.execute("ALTER TABLE measurements DROP COLUMN attempts")
        conn.execute("ALTER TABLE experiments DROP COLUMN provenance_json")
    conn.execute("UPDATE schema_meta SET schema_version = ?", (version,))
    conn.commit()
    conn.close()
    before = digest(db)
    read, _ = connect_read_only(db)
    copy = _upgraded_copy(sqlite3.connect(f"file:{db}?immutable=1", uri=True), version)
    try:
        assert next(r[2] for r in read.execute("PRAGMA database_list")) == str(db.resolve())
        for table in TABLES:
            got, want = (
                read.execute(f"SELECT * FROM {table}"),
                copy.execute(f"SELECT * FROM {table}"),
            )
            assert [d[0] for d in got.description] == [d[0] for d in want.description], table
            assert sorted(map(tuple, got), key=repr) == sorted(want, key=repr), table
        assert read.execute("SELECT count(*) FROM measurements").fetchone()[0] == 22
    finally:
        read.close()
        copy.close()
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lem.db"]
