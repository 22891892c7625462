"""Stored results as flat tables: one row per measurement (cycle) or per experiment.

``measurement_rows`` gives one row per stored cycle, ok and failed, in campaign, experiment
and cycle order; ``experiment_rows`` one row per experiment with statistics over its ok
cycles (mean, median, sample std, Student's t 95% CI of the mean, CV — the same functions
``lem results show`` uses). Rows are dicts of scalars (str, int, float, bool or None) with
exactly the keys of ``MEASUREMENT_COLUMNS`` / ``EXPERIMENT_COLUMNS`` (results_columns.py,
documented in docs/results.md) in that order. Null stays None, never 0.

Payloads and configs are read as plain JSON, so rows written by another lem version still
load (a field that version lacked is None); a payload, flat (schema ≤ 4) or nested, is read
through its flat view (``lem.protocol.result_payload.flat_payload``), whose names are the
columns'. ``generic_row`` makes a row so, cell by cell; ``typed_row`` makes the same cells
from typed decoding, much faster, and is what is used.

At scale, ``ResultSet`` reads a store's campaigns one experiment at a time (``groups``):
its shared values (``SHARED_COLUMNS``) and its own rows' values (``MEASURED_COLUMNS``, or
``EXPERIMENT_OWN_COLUMNS`` at the experiment level), never the whole table at once; the
exports and ``lem.load_results`` stream from it.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lem.coordinator.results.columns import (
    EXPERIMENT_COLUMNS,
    LEVELS,
    MEASUREMENT_COLUMNS,
    SHARED_COLUMNS,
    Level,
    columns,
)
from lem.coordinator.results.experiment_row import (
    EXPERIMENT_INPUTS,
    EXPERIMENT_OWN_COLUMNS,
    experiment_values,
)
from lem.coordinator.results.typed_row import MEASURED_COLUMNS, MeasuredReader, Values, shared
from lem.coordinator.store.reading import connect_read_only, resolve_campaign_ids
from lem.coordinator.store.results_store import StoreError

COLUMNS: dict[str, str] = MEASUREMENT_COLUMNS  # the measurement level (the export default)
Row = dict[str, Any]
Group = tuple[Values, list[Values]]  # an experiment's shared values, its own rows' values

__all__ = [
    "COLUMNS",
    "EXPERIMENT_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "ResultSet",
    "experiment_rows",
    "full_row",
    "grouped_rows",
    "measurement_rows",
    "own_columns",
    "resolve_campaign_ids",
]

_EXPERIMENTS_QUERY = """
    SELECT c.id AS campaign_id, c.name AS campaign_name, e.id AS experiment_id,
           e.name AS experiment_name, e.position AS experiment_position, e.config_json
    FROM experiments e JOIN campaigns c ON c.id = e.campaign_id
    WHERE c.id = ? ORDER BY e.position
"""
_MEASUREMENTS_QUERY = """
    SELECT m.experiment_id, m.cycle, m.status, m.failure_reason, m.attempts, m.worker_id,
           m.recorded_at_unix_s, CAST(m.payload_json AS BLOB)
    FROM measurements m JOIN experiments e ON e.id = m.experiment_id
    WHERE e.campaign_id = ? ORDER BY e.position, m.cycle
"""


def own_columns(level: Level) -> tuple[str, ...]:
    """The columns of one level besides ``SHARED_COLUMNS``, in table order."""
    return MEASURED_COLUMNS if level == "measurement" else EXPERIMENT_OWN_COLUMNS


class ResultSet:
    """The stored results of some campaigns of a store, read one experiment at a time.

    Opening resolves the campaigns (ids or unique prefixes; None: all, oldest first) and
    raises ``StoreError`` for a missing store or an unknown/ambiguous id; ``groups`` then
    reads. Close it (or use it as a context manager) when done.
    """

    def __init__(self, store_path: str | Path, campaign_ids: Sequence[str] | None = None) -> None:
        self._conn, self._version = open_for_reading(store_path)
        try:
            self.campaign_ids = resolve_campaign_ids(self._conn, campaign_ids)
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> ResultSet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def groups(self, level: Level) -> Iterator[Group]:
        """Each experiment, in order: its shared values and its own rows' values (one row
        per stored cycle, or its one experiment row)."""
        if level == "measurement":
            for experiment, rows in self._experiments(MEASURED_COLUMNS):
                yield shared(experiment), rows
        else:
            for experiment, rows in self._experiments(EXPERIMENT_INPUTS):
                yield shared(experiment), [experiment_values(rows)]

    def _experiments(self, columns: tuple[str, ...]) -> Iterator[tuple[Row, list[Values]]]:
        """Each experiment (its row of the experiments query) and its measurements' values
        of ``columns`` (of ``MEASURED_COLUMNS``)."""
        reader = MeasuredReader(self._version, columns)
        for campaign_id in self.campaign_ids:
            experiments = self._conn.execute(_EXPERIMENTS_QUERY, (campaign_id,))
            measurements = self._conn.cursor()
            measurements.row_factory = None
            pending = next(measurements.execute(_MEASUREMENTS_QUERY, (campaign_id,)), None)
            for e in experiments:
                experiment = {**dict(e), "schema_version": self._version}
                rows: list[Values] = []
                while pending is not None and pending[0] == experiment["experiment_id"]:
                    rows.append(reader.measured(experiment, pending[1:]))
                    pending = next(measurements, None)
                yield experiment, rows
            if pending is not None:  # both queries order by position: cannot happen
                raise StoreError(f"measurement of unknown experiment {pending[0]!r}")


def measurement_rows(
    store_path: str | Path, campaign_ids: Sequence[str] | None = None
) -> list[Row]:
    """One row per stored cycle of the given campaigns (ids or unique prefixes; None: all,
    oldest first). Raises ``StoreError`` for a missing store or an unknown/ambiguous id."""
    return [row for _, rows in grouped_rows(store_path, campaign_ids) for row in rows]


def experiment_rows(store_path: str | Path, campaign_ids: Sequence[str] | None = None) -> list[Row]:
    """One row per experiment of the given campaigns, statistics over its ok cycles (an
    experiment with no stored cycle yet has counts 0 and null statistics)."""
    with ResultSet(store_path, campaign_ids) as results:
        return [
            _row("experiment", shared_values, own)
            for shared_values, [own] in results.groups("experiment")
        ]


def grouped_rows(
    store_path: str | Path, campaign_ids: Sequence[str] | None = None
) -> list[tuple[Row, list[Row]]]:
    """Each experiment of the given campaigns, in order: its identity, setup and
    ``config.*`` columns (as in ``EXPERIMENT_COLUMNS``), and its measurement rows."""
    with ResultSet(store_path, campaign_ids) as results:
        return [
            (
                dict(zip(SHARED_COLUMNS, shared_values, strict=True)),
                [_row("measurement", shared_values, own) for own in rows],
            )
            for shared_values, rows in results.groups("measurement")
        ]


def full_row(level: Level) -> Callable[[Values], Values]:
    """Picks a row's values in table order from ``shared values + own values``."""
    return _FULL[level]


_FULL = {
    level: operator.itemgetter(
        *[[*SHARED_COLUMNS, *own_columns(level)].index(name) for name in columns(level)]
    )
    for level in LEVELS
}


def _row(level: Level, shared_values: Values, own: Values) -> Row:
    return dict(zip(columns(level), _FULL[level](shared_values + own), strict=True))


def open_for_reading(store_path: str | Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to an existing store (read at the current schema, an older
    file through temporary views: store/reading.py) and the schema version it is read at.
    ``StoreError`` if it is missing or not a lem store. The file is never written."""
    return connect_read_only(Path(store_path))
