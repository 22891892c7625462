"""lem's results store: campaigns, experiments and measurements in one SQLite file.

One ``Store`` wraps one connection. The file runs in WAL mode so a reader (``lem
results``) can open it while the coordinator writes. Every write is one ``BEGIN
IMMEDIATE`` transaction: it lands whole or not at all. ``synchronous=FULL``: writes
are rare (one per measured cycle) and each stands for minutes of GPU time, so a
committed row survives power loss as well as a crash.

Recording a cycle is idempotent: an ok row for an (experiment, cycle) is final, and a
later ``record_measurement`` or ``record_failure`` for that pair stores nothing and
returns ``False`` (``UNIQUE (experiment_id, cycle)`` backs this). An ok result replaces a
failed row (a resumed campaign re-runs failed cycles); a new failure updates a failed
row's reason and attempts. Resume bookkeeping (cycle states, lazily inserted experiment
rows, a campaign's final status and the error that stopped it) is in state.py.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from msgspec import structs

from lem.coordinator.store import schema as schema
from lem.coordinator.store.aggregate import Aggregate, as_dict, experiment_of, summary_of
from lem.coordinator.store.opening import foreign_tables, set_wal
from lem.coordinator.store.reading import connect_read_only, resolve_campaign_ids
from lem.coordinator.store.requests import (
    insert_requests,
    latency_columns,
    read_requests,
    without_requests,
)
from lem.coordinator.store.schema import (
    CampaignDetail,
    CampaignSummary,
    MeasurementRecord,
    StoreError,
)
from lem.coordinator.store.state import StateQueries
from lem.protocol.config import ExperimentConfig, config_hash
from lem.protocol.latency import RequestRecord
from lem.protocol.result_payload import decode_measurement, flat_fields
from lem.protocol.results import Environment, Measurement

BUSY_TIMEOUT_S = 30.0


def new_id(prefix: str) -> str:
    """A fresh id such as ``c-20261127T063412-3f9a1c``: UTC time plus 24 random bits."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _insert(conn: sqlite3.Connection, table: str, **values: Any) -> int:
    """INSERT one row (column names are code constants, never user input); its rowid."""
    columns = ", ".join(values)
    marks = ", ".join(f":{c}" for c in values)
    cur = conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)
    assert cur.lastrowid is not None
    return cur.lastrowid


class Store(StateQueries):
    """The results database at ``path`` (parent folders are created; ``:memory:`` works)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # isolation_level=None: no implicit transactions; _tx() issues BEGIN/COMMIT.
        # check_same_thread=False: parallel lanes (lanes.py) call it, one call at a time.
        try:  # an unwritable folder, a directory named like the store: bad input, one line
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"cannot open results database {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._refuse_foreign()  # before WAL: another application's file stays as it was
            set_wal(self._conn, BUSY_TIMEOUT_S)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._ensure_schema()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged text too
            self._conn.close()
            raise StoreError(f"cannot open results database {self.path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def read_only(cls, path: str | Path) -> Store:
        """The store at ``path`` for reading only (reading.py): never written or migrated."""
        store = cls.__new__(cls)
        store.path = str(path)
        store._conn, _ = connect_read_only(Path(path))
        return store

    # ---- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (committed writes are already durable)."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        A constraint violation (e.g. a duplicate experiment id) becomes ``StoreError``.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise StoreError(f"{self.path}: write refused, nothing stored: {exc}") from exc
            raise

    def _ensure_schema(self) -> None:
        if self._version() == schema.SCHEMA_VERSION:
            return  # the common case: no write lock needed
        with self._tx() as conn:  # re-checked under the write lock: another process may win
            version = self._version()
            if version is None:
                if conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                    raise StoreError(f"{self.path} is an SQLite database but not a lem store")
                for statement in schema.DDL:
                    conn.execute(statement)
                _insert(conn, "schema_meta", id=1, schema_version=schema.SCHEMA_VERSION)
            elif version > schema.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has results schema version {version}, newer than the "
                    f"version {schema.SCHEMA_VERSION} this lem knows: upgrade lem to open it"
                )
            else:  # MIGRATIONS[v] upgrades version v to v + 1
                for old in range(version, schema.SCHEMA_VERSION):
                    for statement in schema.MIGRATIONS[old]:
                        conn.execute(statement)
                conn.execute("UPDATE schema_meta SET schema_version = ?", (schema.SCHEMA_VERSION,))

    def _refuse_foreign(self) -> None:
        """``StoreError`` for an SQLite file with tables but no lem schema."""
        if foreign_tables(self._conn):
            raise StoreError(f"{self.path} is an SQLite database but not a lem store")

    def _version(self) -> int | None:
        """The file's schema version, or None when it has no ``schema_meta`` table."""
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_meta'"
        if not self._conn.execute(query).fetchone():
            return None
        return int(self._conn.execute("SELECT schema_version FROM schema_meta").fetchone()[0])

    def schema_version(self) -> int:
        """The schema version of the open file."""
        return self._version() or 0

    # ---- writes -------------------------------------------------------------------

    def create_campaign(
        self,
        name: str,
        source_path: str | None,
        source_hash: str | None,
        cycles: int,
        experiments: Sequence[tuple[str, ExperimentConfig, str]] = (),
        *,
        source_text: str | None = None,
        experiment_count: int | None = None,
    ) -> str:
        """Insert a campaign (status ``running``) and its experiments in one transaction.

        ``experiments`` holds (experiment_id, effective config, load_key) in run order;
        their position is the index. The campaign runner passes none and inserts each
        experiment when first dispatched (``ensure_experiment``), giving the planned count
        as ``experiment_count`` (default: ``len(experiments)``) and the campaign file's
        ``source_text`` for resuming. Returns the new campaign id. A duplicate experiment
        id raises ``StoreError`` and stores nothing.
        """
        if cycles < 1:
            raise StoreError(f"cycles must be >= 1, got {cycles}")
        campaign_id = new_id("c")
        with self._tx() as conn:
            _insert(
                conn,
                "campaigns",
                id=campaign_id,
                name=name,
                source_path=source_path,
                source_hash=source_hash,
                source_text=source_text,
                created_at_unix_s=time.time(),
                status="running",
                experiment_count=len(experiments) if experiment_count is None else experiment_count,
                cycles=cycles,
            )
            for position, (experiment_id, config, key) in enumerate(experiments):
                _insert(
                    conn,
                    "experiments",
                    id=experiment_id,
                    campaign_id=campaign_id,
                    position=position,
                    name=config.name,
                    config_json=msgspec.json.encode(config, order="sorted").decode(),
                    config_hash=config_hash(config),
                    load_key=key,
                )
        return campaign_id

    def record_measurement(self, m: Measurement, attempts: int | None = None) -> bool:
        """Store an ok cycle (replacing a failed row); ``False`` if it is already ok.

        ``attempts``: how many attempts the cycle took in all (None: not counted, e.g. a
        result read back from a worker's journal). The cycle's state becomes ``ok``.
        """
        m = msgspec.structs.replace(m, store_schema_version=schema.SCHEMA_VERSION)
        fields = flat_fields(m)
        with self._tx() as conn:
            existing = self._existing_status(conn, m.experiment_id, m.cycle)
            if existing == "ok":
                return False
            if existing == "failed":
                conn.execute(
                    "DELETE FROM measurements WHERE experiment_id = ? AND cycle = ?",
                    (m.experiment_id, m.cycle),
                )
            measurement_id = _insert(
                conn,
                "measurements",
                **{field: fields[field] for field in schema.MEASUREMENT_FIELD_COLUMNS},
                **latency_columns(m),
                status="ok",
                attempts=attempts,
                recorded_at_unix_s=time.time(),
                environment_id=self._environment_id(conn, m.environment),
                flags_json=_json(m.flags),
                payload_json=_json(without_requests(m)),  # requests: request_latencies
            )
            for g in m.energy.gpu_energy:  # GpuEnergy fields are the gpu_energy columns
                _insert(conn, "gpu_energy", measurement_id=measurement_id, **structs.asdict(g))
            insert_requests(conn, measurement_id, m.latency.requests)
            _set_state(conn, m.experiment_id, m.cycle, "ok", None)
        return True

    def record_failure(
        self,
        experiment_id: str,
        cycle: int,
        reason: str,
        worker_id: str | None,
        attempts: int | None = None,
    ) -> bool:
        """Store a failed cycle with its reason, attempts in all and NULL numbers.

        A failed row already there is updated; ``False`` (nothing stored) if it is ok.
        """
        with self._tx() as conn:
            existing = self._existing_status(conn, experiment_id, cycle)
            if existing == "ok":
                return False
            if existing == "failed":
                conn.execute(
                    "UPDATE measurements SET failure_reason = ?, attempts = ?, worker_id = ?,"
                    " recorded_at_unix_s = ? WHERE experiment_id = ? AND cycle = ?",
                    (reason, attempts, worker_id, time.time(), experiment_id, cycle),
                )
            else:
                _insert(
                    conn,
                    "measurements",
                    experiment_id=experiment_id,
                    cycle=cycle,
                    status="failed",
                    failure_reason=reason,
                    attempts=attempts,
                    recorded_at_unix_s=time.time(),
                    worker_id=worker_id,
                )
            _set_state(conn, experiment_id, cycle, "failed", reason)
        return True

    def _existing_status(
        self, conn: sqlite3.Connection, experiment_id: str, cycle: int
    ) -> str | None:
        """The stored row's status (ok, failed) or None; ``StoreError`` for an unknown id."""
        self._checkexperiment_of(experiment_id)
        query = "SELECT status FROM measurements WHERE experiment_id = ? AND cycle = ?"
        row = conn.execute(query, (experiment_id, cycle)).fetchone()
        return None if row is None else str(row[0])

    def _checkexperiment_of(self, experiment_id: str) -> None:
        query = "SELECT 1 FROM experiments WHERE id = ?"
        if not self._conn.execute(query, (experiment_id,)).fetchone():
            raise StoreError(f"no experiment with id {experiment_id!r}")

    @staticmethod
    def _environment_id(conn: sqlite3.Connection, env: Environment) -> int:
        env_hash = hashlib.sha256(msgspec.json.encode(env, order="sorted")).hexdigest()
        found = conn.execute("SELECT id FROM environments WHERE env_hash = ?", (env_hash,))
        if found := found.fetchone():
            return int(found[0])
        return _insert(
            conn,
            "environments",
            **{field: getattr(env, field) for field in schema.ENVIRONMENT_FIELD_COLUMNS},
            env_hash=env_hash,
            gpu_names=_json([g.name for g in env.gpus]),
            gpu_uuids=_json([g.uuid for g in env.gpus]),
            power_limits_w=_json([g.power_limit_w for g in env.gpus]),
            payload_json=_json(env),
        )

    # ---- queries ------------------------------------------------------------------

    def list_campaigns(self) -> list[CampaignSummary]:
        """All campaigns, oldest first."""
        aggs: dict[str, Aggregate] = {}
        for row in self._conn.execute(schema.MEASUREMENT_STATS_QUERY):
            aggs.setdefault(row["campaign_id"], Aggregate()).add(row)
        rows = self._conn.execute(
            f"SELECT {schema.CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at_unix_s, id"
        )
        return [summary_of(row, aggs.get(row["id"], Aggregate())) for row in rows]

    def campaign_detail(self, campaign_id: str) -> CampaignDetail:
        """One campaign (its id or a unique prefix of it) and its experiments in run order;
        ``StoreError`` for an unknown id or an ambiguous prefix."""
        [campaign_id] = resolve_campaign_ids(self._conn, [campaign_id])
        query = f"SELECT {schema.CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"
        campaign = self._conn.execute(query, (campaign_id,)).fetchone()
        aggs: dict[str, Aggregate] = {}
        total = Aggregate()
        query = schema.EXPERIMENT_STATS_QUERY + " WHERE e.campaign_id = ?"
        for m in self._conn.execute(query, (campaign_id,)):
            aggs.setdefault(m["experiment_id"], Aggregate()).add(m)
            total.add(m)
        experiments = self._conn.execute(
            f"SELECT {schema.EXPERIMENT_COLUMNS} FROM experiments"
            " WHERE campaign_id = ? ORDER BY position",
            (campaign_id,),
        )
        return CampaignDetail(
            campaign=summary_of(campaign, total),
            experiments=[experiment_of(e, aggs.get(e["id"], Aggregate())) for e in experiments],
        )

    def experiment_measurements(self, experiment_id: str) -> list[MeasurementRecord]:
        """Every stored cycle of one experiment, by cycle."""
        self._checkexperiment_of(experiment_id)
        rows = self._conn.execute(
            "SELECT experiment_id, cycle, status, failure_reason, worker_id, attempts,"
            " recorded_at_unix_s, payload_json FROM measurements"
            " WHERE experiment_id = ? ORDER BY cycle",
            (experiment_id,),
        )
        return [
            MeasurementRecord(
                **{k: v for k, v in as_dict(r).items() if k != "payload_json"},
                measurement=(
                    None
                    if r["payload_json"] is None
                    else decode_measurement(r["payload_json"])  # schema ≤ 4: flat
                ),
            )
            for r in rows
        ]

    def request_records(self, experiment_id: str, cycle: int) -> list[RequestRecord]:
        """The per-request latency table of one stored cycle (ms; ITLs as float32 LE)."""
        self._checkexperiment_of(experiment_id)
        return read_requests(self._conn, experiment_id, cycle)


def _set_state(
    conn: sqlite3.Connection, experiment_id: str, cycle: int, state: str, reason: str | None
) -> None:
    """Set the state of the cycle_states row of (experiment, cycle), if it has one."""
    conn.execute(
        "UPDATE cycle_states SET state = ?, last_reason = coalesce(?, last_reason),"
        " updated_at_unix_s = ? WHERE experiment_id = ? AND cycle = ?",
        (state, reason, time.time(), experiment_id, cycle),
    )
