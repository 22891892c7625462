"""The result tables as lem made them before issue 16, row by row: the reference that the
fast path (``lem.coordinator.results.table``, ``formats``) must equal cell for cell, type for
type, and the writers byte for byte. Kept as it was (coordinator/results/table.py at
eb5b117), less what moved into ``generic_row``, which is the same code."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lem.coordinator.results.columns import EXPERIMENT_COLUMNS, KINDS, STAT_METRICS, coerce
from lem.coordinator.results.columns import stat_column as _stat_column
from lem.coordinator.results.generic_row import distinct, measurement_row, setup
from lem.coordinator.results.stats import t95
from lem.coordinator.results.table import open_for_reading, resolve_campaign_ids

Row = dict[str, Any]
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
    experiments, measurements = _read(store_path, campaign_ids)
    return [measurement_row(experiments[m["experiment_id"]], m) for m in measurements]


def experiment_rows(store_path: str | Path, campaign_ids: Sequence[str] | None = None) -> list[Row]:
    experiments, measurements = _read(store_path, campaign_ids)
    by_experiment: dict[str, list[Row]] = {e: [] for e in experiments}
    for m in measurements:
        by_experiment[m["experiment_id"]].append(
            measurement_row(experiments[m["experiment_id"]], m)
        )
    return [_experiment_row(setup(experiments[e]), rows) for e, rows in by_experiment.items()]


def _read(
    store_path: str | Path, campaign_ids: Sequence[str] | None
) -> tuple[dict[str, Row], list[Row]]:
    conn, version = open_for_reading(store_path)
    try:
        experiments: dict[str, Row] = {}
        measurements: list[Row] = []
        for campaign_id in resolve_campaign_ids(conn, campaign_ids):
            for e in conn.execute(_EXPERIMENTS_QUERY, (campaign_id,)):
                experiments[e["experiment_id"]] = {**dict(e), "schema_version": version}
            measurements.extend(dict(m) for m in conn.execute(_MEASUREMENTS_QUERY, (campaign_id,)))
        return experiments, measurements
    finally:
        conn.close()


def _statistics(metric: str, values: Sequence[float]) -> Row:
    mean = statistics.fmean(values) if values else None
    # ci95_half_width and store.aggregate.spread as they were: statistics.stdev
    half_width = (
        t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        if len(values) >= 2
        else None
    )
    std = statistics.stdev(values) if len(values) >= 2 else None
    cv = None
    if std is not None:
        spread_mean = statistics.fmean(values)
        cv = std / spread_mean if spread_mean > 0 else None
    low = high = None
    if mean is not None and half_width is not None:
        low, high = mean - half_width, mean + half_width
    found = {
        "n": len(values),
        "mean": mean,
        "median": statistics.median(values) if values else None,
        "std": std,
        "ci95_low": low,
        "ci95_high": high,
        "cv": cv,
    }
    return {_stat_column(metric, s): v for s, v in found.items()}


def _experiment_row(shared: Row, rows: Sequence[Row]) -> Row:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    row: Row = {
        **shared,
        "cycles_ok": len(ok),
        "cycles_failed": len(failed),
        "failure_reasons": distinct(r["failure_reason"] for r in failed),
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
        row[column] = distinct(part for r in ok if r[column] for part in r[column].split(";"))
    return {name: coerce(KINDS[name], row.get(name)) for name in EXPERIMENT_COLUMNS}
