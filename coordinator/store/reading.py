"""Opening a store for reading only: the file is never written, migrated or given side files.

``lem results list/show/export``, ``lem compare`` and ``lem report`` read through this. With
no ``-wal`` file beside the store (no writer is active; nothing uncommitted), it is opened
``immutable=1``: no locks, no ``-wal``/``-shm`` files, and it works on read-only media and
read-only folders. With a ``-wal`` file there (a campaign may be writing), it is opened
``mode=ro``, which reads the writer's committed transactions. A store at an older schema
version whose upgrade changes tables is copied into memory and upgraded there; the file
keeps its version. A file that is not a lem store (an empty file, another application's
database) is refused with ``StoreError`` and left as it was.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from lem.coordinator.store import schema
from lem.coordinator.store.schema import StoreError


def connect_read_only(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to the store at ``path`` and the schema version it is read at:
    the current one, which an older file is read through (the file keeps its own version)."""
    try:
        present = path.is_file()
        wal = present and path.with_name(path.name + "-wal").exists()
    except OSError:  # a name too long for the file system
        present = False
    if not present:
        raise StoreError(f"{path}: no result store here (run a campaign first, or pass --store)")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?" + ("mode=ro" if wal else "immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open results database {path}: {exc}") from exc
    try:
        version = _version(conn)
        if version is None:
            raise StoreError(f"{path} is not a lem store (no lem schema in it)")
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"{path} has results schema version {version}, newer than the "
                f"version {schema.SCHEMA_VERSION} this lem knows: upgrade lem to open it"
            )
        if any(schema.MIGRATIONS[v] for v in range(version, schema.SCHEMA_VERSION)):
            conn = _upgraded_copy(conn, version)
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged text too
        conn.close()
        raise StoreError(f"cannot open results database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn, schema.SCHEMA_VERSION


def _version(conn: sqlite3.Connection) -> int | None:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_meta'"
    if not conn.execute(query).fetchone():
        return None
    return int(conn.execute("SELECT schema_version FROM schema_meta").fetchone()[0])


def _upgraded_copy(source: sqlite3.Connection, version: int) -> sqlite3.Connection:
    """An in-memory copy of ``source`` brought to the current schema (``source`` is closed)."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        source.backup(memory)
    finally:
        source.close()
    memory.execute("BEGIN")
    for old in range(version, schema.SCHEMA_VERSION):
        for statement in schema.MIGRATIONS[old]:
            memory.execute(statement)
    memory.execute("UPDATE schema_meta SET schema_version = ?", (schema.SCHEMA_VERSION,))
    memory.execute("COMMIT")
    return memory
