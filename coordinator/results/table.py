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
columns'.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.results.columns import (
    CONFIG_KINDS,
    EXPERIMENT_COLUMNS,
    KINDS,
    LATENCY_METRICS,
    LATENCY_PERCENTILES,
    MEASUREMENT_COLUMNS,
    STAT_METRICS,
    coerce,
    stat_column,
)
from lem.coordinator.results.stats import ci95_half_width
from lem.coordinator.store.aggregate import median_or_none, spread
from lem.coordinator.store.reading import connect_read_only
from lem.coordinator.store.results_store import StoreError
from lem.protocol.result_payload import flat_payload

COLUMNS: dict[str, str] = MEASUREMENT_COLUMNS  # the measurement level (the export default)
Row = dict[str, Any]

__all__ = [
    "COLUMNS",
    "EXPERIMENT_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "experiment_rows",
    "grouped_rows",
    "measurement_rows",
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
           m.recorded_at_unix_s, m.payload_json
    FROM measurements m JOIN experiments e ON e.id = m.experiment_id
    WHERE e.campaign_id = ? ORDER BY e.position, m.cycle
"""


def measurement_rows(
    store_path: str | Path, campaign_ids: Sequence[str] | None = None
) -> list[Row]:
    """One row per stored cycle of the given campaigns (ids or unique prefixes; None: all,
    oldest first). Raises ``StoreError`` for a missing store or an unknown/ambiguous id."""
    experiments, measurements = _read(store_path, campaign_ids)
    return [_measurement_row(experiments[m["experiment_id"]], m) for m in measurements]


def experiment_rows(store_path: str | Path, campaign_ids: Sequence[str] | None = None) -> list[Row]:
    """One row per experiment of the given campaigns, statistics over its ok cycles (an
    experiment with no stored cycle yet has counts 0 and null statistics)."""
    return [_experiment_row(e, rows) for e, rows in grouped_rows(store_path, campaign_ids)]


def grouped_rows(
    store_path: str | Path, campaign_ids: Sequence[str] | None = None
) -> list[tuple[Row, list[Row]]]:
    """Each experiment of the given campaigns, in order: its identity, setup and
    ``config.*`` columns (as in ``EXPERIMENT_COLUMNS``), and its measurement rows."""
    experiments, measurements = _read(store_path, campaign_ids)
    by_experiment: dict[str, list[Row]] = {e: [] for e in experiments}
    for m in measurements:
        experiment = experiments[m["experiment_id"]]
        by_experiment[m["experiment_id"]].append(_measurement_row(experiment, m))
    return [(_setup(experiments[e]), rows) for e, rows in by_experiment.items()]


def resolve_campaign_ids(conn: sqlite3.Connection, wanted: Sequence[str] | None) -> list[str]:
    """Full campaign ids for ``wanted`` (each an id or a unique prefix of one), in the given
    order without repeats; every campaign, oldest first, for None or an empty list."""
    known = [r[0] for r in conn.execute("SELECT id FROM campaigns ORDER BY created_at_unix_s, id")]
    if not wanted:
        return known
    found: list[str] = []
    for want in wanted:
        matches = [want] if want in known else [k for k in known if k.startswith(want)]
        if not matches:
            raise StoreError(f"no campaign with id or id prefix {want!r}")
        if len(matches) > 1:
            raise StoreError(f"campaign id prefix {want!r} is ambiguous: {', '.join(matches)}")
        if matches[0] not in found:
            found.append(matches[0])
    return found


def open_for_reading(store_path: str | Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to an existing store (at the current schema, in memory for an
    older file: store/reading.py) and the schema version it is read at. ``StoreError`` if it is
    missing or not a lem store. The file is never written."""
    return connect_read_only(Path(store_path))


def _read(
    store_path: str | Path, campaign_ids: Sequence[str] | None
) -> tuple[dict[str, Row], list[Row]]:
    """Experiments (id → identity, config, schema version) and measurement rows, in order."""
    conn, version = open_for_reading(store_path)
    try:
        experiments: dict[str, Row] = {}
        measurements: list[Row] = []
        for campaign_id in resolve_campaign_ids(conn, campaign_ids):
            for e in conn.execute(_EXPERIMENTS_QUERY, (campaign_id,)):
                experiments[e["experiment_id"]] = {**dict(e), "schema_version": version}
            measurements.extend(dict(m) for m in conn.execute(_MEASUREMENTS_QUERY, (campaign_id,)))
        unknown = sorted({m["experiment_id"] for m in measurements} - experiments.keys())
        if unknown:  # the join found them, the experiments' own read did not: a damaged file
            raise StoreError(
                f"{store_path}: a damaged store: measurements of experiment {unknown[0]!r}, "
                "which it does not hold"
            )
        return experiments, measurements
    finally:
        conn.close()


# ---- one measurement --------------------------------------------------------------


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _joined(values: Iterable[Any]) -> str | None:
    """``a;b`` of the values in order, None when there are none."""
    text = [str(v) for v in values]
    return ";".join(text) if text else None


def _distinct(values: Iterable[Any]) -> str | None:
    return _joined(sorted({str(v) for v in values if v is not None}))


def _setup(experiment: Row) -> Row:
    """Identity, key setup fields and every ``config.*`` leaf of one experiment."""
    config: dict[str, Any] = msgspec.json.decode(experiment["config_json"])
    model = config.get("model") or {}
    return {
        "campaign_id": experiment["campaign_id"],
        "campaign_name": experiment["campaign_name"],
        "experiment_id": experiment["experiment_id"],
        "experiment_name": experiment["experiment_name"],
        "experiment_position": experiment["experiment_position"],
        "model": model.get("name") or model.get("path"),
        "model_source": model.get("source"),
        "dtype": model.get("dtype"),
        "backend": config.get("backend"),
        "batch_size": config.get("batch_size"),
        "workload_mode": _lookup(config, "workload.mode") or "offline",
        **{f"config.{leaf}": _lookup(config, leaf) for leaf in CONFIG_KINDS},
    }


def _environment(payload: Mapping[str, Any]) -> Row:
    env = payload.get("environment")
    if not env:
        return {}
    gpus = env.get("gpus") or []
    limits = [g.get("power_limit_w") for g in gpus]
    packages = env.get("packages") or {}
    lock = env.get("engine_lock") or {}
    return {
        "engine_lock": lock.get("name"),
        "engine_lock_sha256": lock.get("sha256"),
        "engine_lock_matches": lock.get("matches"),
        **{k: env.get(k) for k in ("driver_version", "cuda_version", "backend_version")},
        **{k: env.get(k) for k in ("python_version", "lem_version", "hostname")},
        "gpu_count": len(gpus),
        "gpu_names": _joined(g.get("name") for g in gpus),
        "gpu_uuids": _joined(g.get("uuid") for g in gpus),
        "gpu_power_limits_w": _joined("null" if w is None else f"{w:g}" for w in limits),
        "packages": _joined(f"{k}={v}" for k, v in sorted(packages.items())),
    }


def _energy_details(payload: Mapping[str, Any]) -> Row:
    per_gpu = payload.get("gpu_energy") or []
    idle = [g.get("idle_power_w") for g in per_gpu]
    return {
        "energy_method": _distinct(g.get("method") for g in per_gpu),
        "idle_power_w": sum(idle) if idle and None not in idle else None,
    }


def _latency(payload: Mapping[str, Any]) -> Row:
    row: Row = {}
    for metric in LATENCY_METRICS:
        summary = payload.get(f"{metric}_ms") or {}
        for p in LATENCY_PERCENTILES:
            row[f"{metric}_{p}_ms"] = summary.get(f"{p}_ms")
    row["goodput_share"] = (payload.get("goodput") or {}).get("good_share")
    return row


def _measurement_row(experiment: Row, m: Row) -> Row:
    payload: dict[str, Any] = (
        flat_payload(msgspec.json.decode(m["payload_json"])) if m["payload_json"] else {}
    )
    row: Row = {
        **payload,  # Measurement fields named as their columns (unknown keys are dropped)
        **{k: m[k] for k in ("cycle", "status", "failure_reason", "attempts", "worker_id")},
        "recorded_at_unix_s": m["recorded_at_unix_s"],
        "schema_version": experiment["schema_version"],
        "flags": _joined(payload.get("flags") or []),
        **_energy_details(payload),
        **_latency(payload),
        **_environment(payload),
        **_setup(experiment),
    }
    return {name: coerce(KINDS[name], row.get(name)) for name in MEASUREMENT_COLUMNS}


# ---- one experiment ---------------------------------------------------------------


def _statistics(metric: str, values: Sequence[float]) -> Row:
    """n, mean, median, std, CI95 low/high (Student's t) and CV of one metric's values."""
    mean = statistics.fmean(values) if values else None
    half_width = ci95_half_width(values)
    std, cv = spread(values)
    low = high = None
    if mean is not None and half_width is not None:
        low, high = mean - half_width, mean + half_width
    found = {
        "n": len(values),
        "mean": mean,
        "median": median_or_none(values),
        "std": std,
        "ci95_low": low,
        "ci95_high": high,
        "cv": cv,
    }
    return {stat_column(metric, s): v for s, v in found.items()}


def _experiment_row(setup: Row, rows: Sequence[Row]) -> Row:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    row: Row = {
        **setup,
        "cycles_ok": len(ok),
        "cycles_failed": len(failed),
        "failure_reasons": _distinct(r["failure_reason"] for r in failed),
        "max_energy_relative_bound": max(
            (
                r["energy_bound_j"] / r["energy_j"]
                for r in ok
                if r["energy_bound_j"] is not None and r["energy_j"]
            ),
            default=None,
        ),
    }
    for metric in STAT_METRICS:
        row.update(_statistics(metric, [r[metric] for r in ok if r[metric] is not None]))
    for column in ("flags", "gpu_names", "gpu_uuids", "hostname", "lem_version"):
        row[column] = _distinct(part for r in ok if r[column] for part in r[column].split(";"))
    return {name: coerce(KINDS[name], row.get(name)) for name in EXPERIMENT_COLUMNS}
