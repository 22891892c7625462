"""What ``lem compare`` reads of a campaign, straight from the store's columns.

Per experiment: its identity, its matching key (compare_keys.py) and per compared metric
the values of its ok cycles — read from the flat ``measurements`` columns
(``energy_per_output_token_j``, …, schema.py), not from the payloads, so 10,000 experiments
read in a fraction of a second. Engine locks come from the ``environments`` row of each ok
cycle's environment id, read once per id. The one payload-only figure,
``latency_unavailable_reason``, is decoded only for the experiments whose TTFT or ITL is
null in every ok cycle (the reason is shown for those alone).

The figures are those ``results export`` gives (table.py reads them from the payloads; the
store writes both from the same ``Measurement``): tests/test_compare_scale.py checks that
both readings compare alike.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from lem.coordinator.results.columns import coerce
from lem.coordinator.results.compare_keys import KeyReader
from lem.coordinator.store.schema import StoreError
from lem.protocol.bounds import printable
from lem.protocol.result_payload import flat_payload

# Measurement columns compared (each in the unit its name carries) and their labels.
METRICS = {
    "energy_per_output_token_j": "J/token",
    "net_energy_per_output_token_j": "net J/token",
    "output_tokens_per_s": "tokens/s",
    "ttft_p50_ms": "TTFT p50 ms",
    "itl_p50_ms": "ITL p50 ms",
}
# The column that says why a metric is null, where the store keeps one.
REASON_COLUMNS = {
    "energy_per_output_token_j": "energy_unavailable_reason",
    "net_energy_per_output_token_j": "net_energy_unavailable_reason",
    "ttft_p50_ms": "latency_unavailable_reason",
    "itl_p50_ms": "latency_unavailable_reason",
}
_FLAT_REASONS = ("energy_unavailable_reason", "net_energy_unavailable_reason")
_PAYLOAD_REASON = "latency_unavailable_reason"  # only in the payload

# Each ok cycle of a campaign, grouped by experiment, in cycle order.
_OK_CYCLES = f"""
    SELECT m.experiment_id, m.id, m.environment_id, {", ".join(f"m.{c}" for c in METRICS)},
           {", ".join(f"m.{c}" for c in _FLAT_REASONS)}
    FROM measurements m
    WHERE m.status = 'ok'
      AND m.experiment_id IN (SELECT id FROM experiments WHERE campaign_id = ?)
    ORDER BY m.experiment_id, m.cycle
"""
_AT = {metric: 3 + i for i, metric in enumerate(METRICS)}  # metric → its place in a row
_REASONS_AT = {column: 3 + len(METRICS) + i for i, column in enumerate(_FLAT_REASONS)}


class SideExperiment(msgspec.Struct):
    """One experiment of a compared campaign as compare needs it. ``values``: per metric,
    its non-null values over the ok cycles in cycle order; ``reasons``: per reason column,
    the non-empty reasons of the ok cycles in cycle order; ``locks``: the engine lock
    labels of the ok cycles (``lock_label``)."""

    experiment_id: str
    position: int
    name: str | None
    key: tuple[Any, ...]
    cycles_ok: int = 0
    values: dict[str, list[float]] = {}  # empty while it has no ok cycle
    reasons: dict[str, list[str]] = {}
    locks: set[str] = set()

    def values_of(self, metric: str) -> list[float]:
        return self.values.get(metric) or []

    def all_null(self, metric: str) -> bool:
        """Whether the side has ok cycles and ``metric`` is null in every one of them."""
        return self.cycles_ok > 0 and not self.values.get(metric)

    def reason(self, metric: str) -> str | None:
        """The distinct reasons stored with the metric's nulls, '; '-joined (or None)."""
        column = REASON_COLUMNS.get(metric)
        found = self.reasons.get(column, []) if column else []
        return "; ".join(dict.fromkeys(found)) or None


def lock_label(environment: Any) -> str:
    """One ok cycle's engine lock: ``name@sha256[:12]`` (``+differs`` where the environment
    did not hold the lock exactly; ``unrecorded`` before lem recorded locks)."""
    env = environment if isinstance(environment, Mapping) and environment else {}
    lock = env.get("engine_lock") or {}
    sha = coerce("str", lock.get("sha256"))
    label = f"{coerce('str', lock.get('name'))}@{sha[:12]}" if sha else "unrecorded"
    return label + ("+differs" if coerce("bool", lock.get("matches")) is False else "")


def read_side(conn: sqlite3.Connection, campaign_id: str, keys: KeyReader) -> list[SideExperiment]:
    """The experiments of one campaign in plan order, each with its matching key and its
    ok cycles' figures."""
    experiments = list(_experiments(conn, campaign_id, keys))
    by_id = {e.experiment_id: e for e in experiments}
    labels: dict[int, str] = {}  # environment id → its lock label
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    rows = cursor.execute(_OK_CYCLES, (campaign_id,)).fetchall()
    for experiment_id, group in itertools.groupby(rows, key=operator.itemgetter(0)):
        e = by_id.get(experiment_id)
        if e is None:  # the join found it, the experiments' own read did not: a damaged file
            raise StoreError(
                f"a damaged store: measurements of experiment {printable(experiment_id)!s},"
                " which it does not hold"
            )
        cycles = list(group)
        e.cycles_ok = len(cycles)
        e.values = {m: [float(r[i]) for r in cycles if r[i] is not None] for m, i in _AT.items()}
        for column, i in _REASONS_AT.items():
            e.reasons[column] = [
                t for r in cycles if r[i] is not None and (t := coerce("str", r[i]))
            ]
        for r in cycles:
            if r[2] is None:  # no environment id: the payload's environment
                e.locks.add(_payload_lock(conn, r[1]))
                continue
            if r[2] not in labels:
                labels[r[2]] = _lock_of(conn, r[2], r[1])
            e.locks.add(labels[r[2]])
        if e.all_null("ttft_p50_ms") or e.all_null("itl_p50_ms"):  # its reason is shown
            found = [_latency_reason(conn, r[1]) for r in cycles]
            e.reasons[_PAYLOAD_REASON] = [text for text in found if text]
    return experiments


def _experiments(
    conn: sqlite3.Connection, campaign_id: str, keys: KeyReader
) -> Iterator[SideExperiment]:
    query = """
        SELECT id, position, name, config_json
        FROM experiments WHERE campaign_id = ? ORDER BY position
    """
    for row in conn.execute(query, (campaign_id,)):
        yield SideExperiment(row[0], row[1], row[2], keys.key(row[3]))


def _lock_of(conn: sqlite3.Connection, environment_id: int, measurement_id: int) -> str:
    """The lock label of an environment id: from its ``environments`` row, else (a store
    whose rows were copied without it) from the payload of a measurement that names it —
    the store gives one id to one environment (its hash), so any such payload says it."""
    row = conn.execute(
        "SELECT payload_json FROM environments WHERE id = ?", (environment_id,)
    ).fetchone()
    if row is None:
        return _payload_lock(conn, measurement_id)
    return lock_label(msgspec.json.decode(row[0]) if row[0] else None)


def _payload_lock(conn: sqlite3.Connection, measurement_id: int) -> str:
    """The lock label of the environment in one measurement's payload."""
    row = conn.execute(
        "SELECT payload_json FROM measurements WHERE id = ?", (measurement_id,)
    ).fetchone()
    payload = msgspec.json.decode(row[0]) if row and row[0] else {}
    return lock_label(payload.get("environment"))


def _latency_reason(conn: sqlite3.Connection, measurement_id: int) -> str | None:
    row = conn.execute(
        "SELECT payload_json FROM measurements WHERE id = ?", (measurement_id,)
    ).fetchone()
    payload = flat_payload(msgspec.json.decode(row[0])) if row and row[0] else {}
    reason = coerce("str", payload.get(_PAYLOAD_REASON))
    return str(reason) if reason else None
