"""Opening a store for reading only: the file is never written, migrated or given side files.

``lem results list/show/export``, ``lem compare`` and ``lem report`` read through this. With
no ``-wal`` file beside the store (no writer is active; nothing uncommitted), it is opened
``immutable=1``: no locks, no ``-wal``/``-shm`` files, and it works on read-only media and
read-only folders. With a ``-wal`` file there (a campaign may be writing), it is opened
``mode=ro``, which reads the writer's committed transactions. A store at an older schema
version is read at the current one without being changed: where every migration since its
version only adds columns (no default) and tables, the connection gets temporary views of
the old tables with the new columns as NULL, and empty temporary tables, in its own memory
(the file is read in place, however large); otherwise the file is copied into memory and
upgraded there. A file that is not a lem store (an empty file, another application's
database) is refused with ``StoreError`` and left as it was.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Sequence
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
            views = _views_of_upgrade(version)
            if views is None:
                conn = _upgraded_copy(conn, version)
            else:
                conn.execute("PRAGMA temp_store = MEMORY")
                for statement in views:
                    conn.execute(statement)
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged text too
        conn.close()
        raise StoreError(f"cannot open results database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn, schema.SCHEMA_VERSION


SHOWN_CANDIDATES = 10  # an ambiguous prefix's error names at most this many campaigns


def resolve_campaign_ids(conn: sqlite3.Connection, wanted: Sequence[str] | None) -> list[str]:
    """Full campaign ids for ``wanted`` (each an id or a unique prefix of one), in the given
    order without repeats; every campaign, oldest first, for None or an empty list.
    ``StoreError`` for an id no campaign has, or a prefix of several (they are listed)."""
    if not wanted:
        query = "SELECT id FROM campaigns ORDER BY created_at_unix_s, id"
        return [r[0] for r in conn.execute(query)]
    found: list[str] = []
    for want in wanted:
        matches = _ids_starting(conn, want)
        if not matches:
            raise StoreError(f"no campaign with id or id prefix {want!r}")
        if len(matches) > 1:
            shown = ", ".join(matches[:SHOWN_CANDIDATES])
            more = len(matches) - SHOWN_CANDIDATES
            raise StoreError(
                f"campaign id prefix {want!r} is ambiguous: it starts {len(matches)} campaign "
                f"ids: {shown}" + (f" and {more} more" if more > 0 else "")
            )
        if matches[0] not in found:
            found.append(matches[0])
    return found


def _ids_starting(conn: sqlite3.Connection, prefix: str) -> list[str]:
    """``[prefix]`` if a campaign has that id, else the ids starting with it, oldest first.
    Both are read through the id's index: only the pages on the way, as a damaged store
    may have others that do not read."""
    if conn.execute("SELECT 1 FROM campaigns WHERE id = ?", (prefix,)).fetchone():
        return [prefix]
    query = (  # U+10FFFF sorts after every character an id can go on with
        "SELECT id FROM campaigns WHERE id >= ? AND id < ? ORDER BY created_at_unix_s, id"
    )
    return [r[0] for r in conn.execute(query, (prefix, prefix + "\U0010ffff"))]


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


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+) (?:TEXT|REAL|INTEGER|BLOB)")
_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+) \(")


def _views_of_upgrade(version: int) -> list[str] | None:
    """Statements that make a connection to a file at ``version`` read as one at the current
    version, touching only its temporary schema (which names resolve to first): an empty
    table for each table a migration creates, a view adding NULL columns for each table that
    migrations add columns to, and ``schema_meta`` at the current version. None where a
    migration does anything else (a default, an index, a change of data): then only an
    upgraded copy reads right."""
    added: dict[str, list[str]] = {}
    statements: list[str] = []
    created: set[str] = set()
    for old in range(version, schema.SCHEMA_VERSION):
        for statement in (s.strip() for s in schema.MIGRATIONS[old]):
            if column := _ADD_COLUMN.fullmatch(statement):
                table, name = column.groups()
                if table in created:
                    statements.append(statement)  # on the temporary table
                else:
                    added.setdefault(table, []).append(name)
            elif table := _CREATE_TABLE.match(statement):
                statements.append(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
                created.add(table.group(1))
            else:
                return None
    for table, names in added.items():
        nulls = ", ".join(f"NULL AS {name}" for name in names)
        statements.append(f"CREATE TEMP VIEW {table} AS SELECT *, {nulls} FROM main.{table}")
    statements.append(
        "CREATE TEMP VIEW schema_meta AS SELECT id, "
        f"{schema.SCHEMA_VERSION} AS schema_version FROM main.schema_meta"
    )
    return statements
