"""The store's resume bookkeeping: lazily inserted experiments and each cycle's state.

A campaign's planned set is identified by (campaign id, experiment position, cycle). An
experiment row is inserted only when one of its cycles is first dispatched, so a plan of a
million points costs nothing up front. A cycle is *done* only when ``measurements`` holds
an ok row for it; ``cycle_states`` says what happened (running, ok, failed, interrupted)
and counts attempts, and every change to it is one transaction. A campaign that an
unexpected error stopped is ``failed`` (so resumable) with the error in ``campaigns.error``.

``StateQueries`` is mixed into ``Store`` (store.py) and uses its connection and ``_tx``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import msgspec

from lem.coordinator.store.schema import CAMPAIGN_ERROR_MAX_CHARS, CAMPAIGN_STATUSES, StoreError
from lem.protocol.config import ExperimentConfig, config_hash

UNFINISHED_STATUSES = ("running", "failed", "interrupted")


def error_text(exc: BaseException) -> str:
    """``exc`` as ``campaigns.error`` holds it: ``Type: message`` on one line (whitespace
    runs, newlines included, become one space), cut to ``CAMPAIGN_ERROR_MAX_CHARS``."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > CAMPAIGN_ERROR_MAX_CHARS:
        text = text[: CAMPAIGN_ERROR_MAX_CHARS - 1] + "…"
    return text


@dataclass(frozen=True)
class StoredCampaign:
    """What resuming needs to know about a stored campaign."""

    id: str
    name: str
    source_path: str | None
    source_hash: str | None
    source_text: str | None
    status: str
    experiment_count: int
    cycles: int
    created_at_unix_s: float
    coordinator_host: str | None = None  # who runs (or last ran) it
    coordinator_pid: int | None = None


class StateQueries:
    """Resume-related reads and writes of ``Store`` (see the module docstring)."""

    _conn: sqlite3.Connection
    path: str

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError  # Store provides it

    # ---- writes -------------------------------------------------------------------

    def ensure_experiment(
        self, campaign_id: str, position: int, experiment_id: str, config: ExperimentConfig,
        load_key: str, provenance: Mapping[str, str] | None = None,
    ) -> str:  # fmt: skip
        """The id of the campaign's experiment at ``position``, inserted now if absent.

        ``experiment_id`` is used only for a new row; an existing row keeps its id (and
        its stored config and provenance), so a resumed cycle lands on the same
        experiment. ``provenance`` maps each effective dotted field to where its value came
        from (``default``, a file, a grid axis, ``cli``; see coordinator/planning/provenance.py).
        """
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO experiments (id, campaign_id, position, name, config_json,"
                " config_hash, load_key, provenance_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (campaign_id, position) DO NOTHING",
                (
                    experiment_id, campaign_id, position, config.name,
                    msgspec.json.encode(config, order="sorted").decode(),
                    config_hash(config), load_key,
                    None if provenance is None else json.dumps(dict(provenance), sort_keys=True),
                ),
            )  # fmt: skip
            row = conn.execute(
                "SELECT id FROM experiments WHERE campaign_id = ? AND position = ?",
                (campaign_id, position),
            ).fetchone()
        return str(row[0])

    def start_attempt(self, campaign_id: str, position: int, cycle: int, experiment_id: str) -> int:
        """Mark a cycle ``running`` and count one more attempt; the attempts in all."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO cycle_states (campaign_id, position, cycle, experiment_id, state,"
                " attempts, updated_at_unix_s) VALUES (?, ?, ?, ?, 'running', 1, ?)"
                " ON CONFLICT (campaign_id, position, cycle) DO UPDATE SET state = 'running',"
                " attempts = attempts + 1, updated_at_unix_s = excluded.updated_at_unix_s",
                (campaign_id, position, cycle, experiment_id, time.time()),
            )
            row = conn.execute(
                "SELECT attempts FROM cycle_states WHERE campaign_id = ? AND position = ?"
                " AND cycle = ?",
                (campaign_id, position, cycle),
            ).fetchone()
        return int(row[0])

    def note_attempt_failed(self, campaign_id: str, position: int, cycle: int, reason: str) -> None:
        """Keep why the latest attempt failed (the cycle may still be retried)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE cycle_states SET last_reason = ?, updated_at_unix_s = ?"
                " WHERE campaign_id = ? AND position = ? AND cycle = ?",
                (reason, time.time(), campaign_id, position, cycle),
            )

    def interrupt_running(self, campaign_id: str) -> int:
        """Mark the campaign's ``running`` cycles ``interrupted``; how many there were."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE cycle_states SET state = 'interrupted', updated_at_unix_s = ?"
                " WHERE campaign_id = ? AND state = 'running'",
                (time.time(), campaign_id),
            )
        return cur.rowcount

    def reopen_campaign(
        self, campaign_id: str, source_hash: str | None, source_text: str | None,
        experiment_count: int, claimant: tuple[str, int] | None = None,
        refuse: Callable[[StoredCampaign], None] | None = None,
    ) -> None:  # fmt: skip
        """Set a campaign ``running`` again for a resume (with its file's current text),
        its stored error cleared.

        Atomic claim: under the write lock (``BEGIN IMMEDIATE``) the stored row is read
        again and ``refuse`` called on it (it raises when another live coordinator holds
        the campaign), then the row is set running and claimed by ``claimant`` (host, PID).
        Two resumes started together cannot both pass: the second sees the first's claim.
        """
        with self._tx() as conn:
            current = self.stored_campaign(campaign_id)
            if current is not None and refuse is not None:
                refuse(current)
            conn.execute(
                "UPDATE campaigns SET status = 'running', finished_at_unix_s = NULL, error = NULL,"
                " source_hash = ?, source_text = ?, experiment_count = ? WHERE id = ?",
                (source_hash, source_text, experiment_count, campaign_id),
            )
            if claimant is not None:
                conn.execute(
                    "UPDATE campaigns SET coordinator_host = ?, coordinator_pid = ? WHERE id = ?",
                    (*claimant, campaign_id),
                )

    def finish_campaign(self, campaign_id: str, status: str, error: str | None = None) -> None:
        """Set a campaign's final status (finished, failed, interrupted), its end time and
        ``error``: what stopped a ``failed`` one (``error_text``), else NULL (cleared)."""
        if status not in CAMPAIGN_STATUSES or status == "running":
            raise StoreError(f"not a final campaign status: {status!r}")
        if error is not None and status != "failed":
            raise StoreError(f"an error is stored only with status failed, not {status!r}")
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE campaigns SET status = ?, finished_at_unix_s = ?, error = ? WHERE id = ?",
                (status, time.time(), error, campaign_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"no campaign with id {campaign_id!r}")

    def claim_campaign(self, campaign_id: str, host: str, pid: int) -> None:
        """Record which coordinator process (host name, PID) runs the campaign now."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE campaigns SET coordinator_host = ?, coordinator_pid = ? WHERE id = ?",
                (host, pid, campaign_id),
            )

    # ---- queries ------------------------------------------------------------------

    def ok_pairs(self, campaign_id: str) -> set[tuple[int, int]]:
        """The (experiment position, cycle) pairs of a campaign that have an ok result."""
        rows = self._conn.execute(
            "SELECT e.position, m.cycle FROM measurements m"
            " JOIN experiments e ON e.id = m.experiment_id"
            " WHERE e.campaign_id = ? AND m.status = 'ok'",
            (campaign_id,),
        )
        return {(int(p), int(c)) for p, c in rows}

    def experiment_positions(self, campaign_id: str) -> dict[str, int]:
        """Experiment id → position, for the experiments stored so far."""
        rows = self._conn.execute(
            "SELECT id, position FROM experiments WHERE campaign_id = ?", (campaign_id,)
        )
        return {str(i): int(p) for i, p in rows}

    def experiment_at(self, campaign_id: str, position: int) -> tuple[str, ExperimentConfig] | None:
        """The id and stored config of the campaign's experiment at ``position``, if stored."""
        row = self._conn.execute(
            "SELECT id, config_json FROM experiments WHERE campaign_id = ? AND position = ?",
            (campaign_id, position),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), msgspec.json.decode(row[1], type=ExperimentConfig)

    def cycle_states(self, campaign_id: str) -> dict[tuple[int, int], tuple[str, int, str | None]]:
        """(position, cycle) → (state, attempts, last failure reason)."""
        rows = self._conn.execute(
            "SELECT position, cycle, state, attempts, last_reason FROM cycle_states"
            " WHERE campaign_id = ?",
            (campaign_id,),
        )
        return {(int(r[0]), int(r[1])): (str(r[2]), int(r[3]), r[4]) for r in rows}

    def stored_campaign(self, campaign_id: str) -> StoredCampaign | None:
        """One campaign's resume facts, or None for an unknown id."""
        return next(self._campaigns("WHERE id = ?", (campaign_id,)), None)

    def unfinished_campaigns(self) -> list[StoredCampaign]:
        """Campaigns that are not ``finished`` (running, failed, interrupted), newest first."""
        marks = ", ".join("?" for _ in UNFINISHED_STATUSES)
        return list(
            self._campaigns(
                f"WHERE status IN ({marks}) ORDER BY created_at_unix_s DESC, id DESC",
                UNFINISHED_STATUSES,
            )
        )

    def _campaigns(self, where: str, params: tuple[object, ...]) -> Iterator[StoredCampaign]:
        columns = (
            "id, name, source_path, source_hash, source_text, status, experiment_count, cycles,"
            " created_at_unix_s, coordinator_host, coordinator_pid"
        )
        for row in self._conn.execute(f"SELECT {columns} FROM campaigns {where}", params):
            yield StoredCampaign(*row)
