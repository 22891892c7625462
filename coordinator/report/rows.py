"""One row of per-experiment aggregates per experiment, as the report's tables and plots use
them, and the Pareto front over such rows."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.results.stats import t95
from lem.coordinator.results.table import experiment_rows, measurement_rows
from lem.coordinator.results.view import HIGH_CV
from lem.coordinator.store.aggregate import median_or_none


@dataclass(frozen=True)
class ExperimentRow:
    """Aggregates over one experiment's ok cycles. J/token figures are per output token:
    ``mean_*`` with ``ci95_*`` (half-width, Student's t over cycles; None with fewer than
    two); throughput, power and latency are medians over cycles. None: not measured (the
    reasons are in ``energy_unavailable_reasons``) or no ok cycle."""

    experiment_id: str
    position: int
    name: str | None
    cycles_ok: int
    cycles_failed: int
    mean_energy_per_output_token_j: float | None
    ci95_energy_per_output_token_j: float | None
    cv_energy_per_output_token: float | None
    mean_net_energy_per_output_token_j: float | None
    ci95_net_energy_per_output_token_j: float | None
    median_output_tokens_per_s: float | None
    median_avg_power_w: float | None
    median_ttft_p50_ms: float | None
    median_itl_p50_ms: float | None
    max_energy_relative_bound: float | None
    flags: list[str] = field(default_factory=list)
    energy_unavailable_reasons: list[str] = field(default_factory=list)
    net_energy_unavailable_reasons: list[str] = field(default_factory=list)
    failure_reasons: list[str] = field(default_factory=list)

    @property
    def high_cv(self) -> bool:
        """J/token varies between cycles by more than ``HIGH_CV`` (``lem results show``'s
        red CV)."""
        return self.cv_energy_per_output_token is not None and (
            self.cv_energy_per_output_token > HIGH_CV
        )

    @property
    def all_flags(self) -> list[str]:
        """The cycles' flags plus ``high_cv`` when it applies."""
        return [*self.flags, "high_cv"] if self.high_cv else list(self.flags)


def pareto_front(
    rows: Sequence[ExperimentRow],
    x: Callable[[ExperimentRow], float | None],
    y: Callable[[ExperimentRow], float | None],
    maximise_x: bool,
) -> list[ExperimentRow]:
    """Rows no other row beats on both ``x`` and ``y`` (``y`` is always minimised, ``x``
    maximised or minimised), sorted by ``x``; rows lacking either value are left out.

    A row is beaten by one at least as good on both and better on one, so equal rows are
    all kept. One sweep from the best ``x`` down (n log n: a front of 100,000 rows takes
    well under a second)."""
    sign = 1.0 if maximise_x else -1.0
    points = [
        (i, sign * xv, yv) for i, r in enumerate(rows)
        if (xv := x(r)) is not None and (yv := y(r)) is not None
    ]  # fmt: skip
    points.sort(key=lambda p: -p[1])
    kept: list[int] = []
    best_y = math.inf  # the lowest y of the rows with a strictly better x
    start = 0
    while start < len(points):
        end = start
        while end < len(points) and points[end][1] == points[start][1]:
            end += 1
        group = points[start:end]  # the rows with this x
        lowest = min(p[2] for p in group)
        if lowest < best_y:
            kept.extend(i for i, _, yv in group if yv == lowest)
        best_y = min(best_y, lowest)
        start = end
    front = sorted(kept)  # plan order, then (stably) by x as before
    return sorted((rows[i] for i in front), key=lambda r: x(r) or 0.0)


def _half_width(row: Mapping[str, Any], metric: str) -> float | None:
    low, high = row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    return None if low is None or high is None else (high - low) / 2


def _split(joined: str | None) -> list[str]:
    return joined.split(";") if joined else []


def experiment_table(store_path: str | Path, campaign_id: str) -> list[ExperimentRow]:
    """The campaign's experiments in plan order, from ``results_table``'s experiment rows
    (and its measurement rows for the reasons a figure is missing). ``StoreError`` for a
    missing store or an unknown campaign."""
    reasons: dict[tuple[str, str], set[str]] = {}
    for m in measurement_rows(store_path, [campaign_id]):
        for column in ("energy_unavailable_reason", "net_energy_unavailable_reason"):
            if m["status"] == "ok" and m[column]:
                reasons.setdefault((m["experiment_id"], column), set()).add(m[column])
    return [
        ExperimentRow(
            experiment_id=e["experiment_id"],
            position=e["experiment_position"],
            name=e["experiment_name"],
            cycles_ok=e["cycles_ok"],
            cycles_failed=e["cycles_failed"],
            mean_energy_per_output_token_j=e["energy_per_output_token_j_mean"],
            ci95_energy_per_output_token_j=_half_width(e, "energy_per_output_token_j"),
            cv_energy_per_output_token=e["energy_per_output_token_cv"],
            mean_net_energy_per_output_token_j=e["net_energy_per_output_token_j_mean"],
            ci95_net_energy_per_output_token_j=_half_width(e, "net_energy_per_output_token_j"),
            median_output_tokens_per_s=e["output_tokens_per_s_median"],
            median_avg_power_w=e["avg_power_w_median"],
            median_ttft_p50_ms=e["ttft_p50_ms_median"],
            median_itl_p50_ms=e["itl_p50_ms_median"],
            max_energy_relative_bound=e["max_energy_relative_bound"],
            flags=_split(e["flags"]),
            energy_unavailable_reasons=sorted(
                reasons.get((e["experiment_id"], "energy_unavailable_reason"), ())
            ),
            net_energy_unavailable_reasons=sorted(
                reasons.get((e["experiment_id"], "net_energy_unavailable_reason"), ())
            ),
            failure_reasons=_split(e["failure_reasons"]),
        )
        for e in experiment_rows(store_path, [campaign_id])
    ]


# Per cycle, in plan order: the flat columns the store keeps beside each payload.
_CYCLE_COLUMNS = """
    SELECT e.id, e.position, e.name, m.status, m.failure_reason,
           m.energy_per_output_token_j, m.net_energy_per_output_token_j,
           m.output_tokens_per_s, m.avg_power_w, m.ttft_p50_ms, m.itl_p50_ms,
           m.energy_j, m.energy_bound_j, m.flags_json,
           m.energy_unavailable_reason, m.net_energy_unavailable_reason
    FROM experiments e LEFT JOIN measurements m ON m.experiment_id = e.id
    WHERE e.campaign_id = ? ORDER BY e.position, m.cycle
"""


def _statistics(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean, 95% CI half-width (Student's t) and CV of ``values``, as ``experiment_table``
    has them, in floating point (the statistics module's exact sums are what made that
    table slow at 100,000 experiments; the figures agree to ~1e-15 relative)."""
    if not values:
        return None, None, None
    mean = math.fsum(values) / len(values)  # statistics.fmean
    if len(values) < 2:
        return mean, None, None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half_width = t95(len(values) - 1) * std / math.sqrt(len(values))
    return mean, half_width, std / mean if mean > 0 else None


def columns_table(conn: sqlite3.Connection, campaign_id: str) -> list[ExperimentRow]:
    """``experiment_table`` for a campaign at the current schema, from the measurements'
    flat columns (one query, no payload decoded): the same figures (to the last digit or
    two), for campaigns of thousands of experiments."""
    cycles: dict[str, list[tuple[Any, ...]]] = {}
    identity: dict[str, tuple[int, str | None]] = {}
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    for r in cursor.execute(_CYCLE_COLUMNS, (campaign_id,)):
        identity[r[0]] = (r[1], r[2])
        if r[3] is not None:
            cycles.setdefault(r[0], []).append(r)
        else:
            cycles.setdefault(r[0], [])
    return [_row_of(eid, *identity[eid], rows) for eid, rows in cycles.items()]


def _row_of(
    experiment_id: str, position: int, name: str | None, rows: list[tuple[Any, ...]]
) -> ExperimentRow:
    ok = [r for r in rows if r[3] == "ok"]
    failed = [r for r in rows if r[3] != "ok"]

    def values(index: int) -> list[float]:
        return [float(r[index]) for r in ok if r[index] is not None]

    mean, ci95, cv = _statistics(values(5))
    net_mean, net_ci95, _ = _statistics(values(6))
    flags = {f for r in ok if r[13] for f in msgspec.json.decode(r[13], type=list[str])}
    return ExperimentRow(
        experiment_id=experiment_id,
        position=position,
        name=name,
        cycles_ok=len(ok),
        cycles_failed=len(failed),
        mean_energy_per_output_token_j=mean,
        ci95_energy_per_output_token_j=ci95,
        cv_energy_per_output_token=cv,
        mean_net_energy_per_output_token_j=net_mean,
        ci95_net_energy_per_output_token_j=net_ci95,
        median_output_tokens_per_s=median_or_none(values(7)),
        median_avg_power_w=median_or_none(values(8)),
        median_ttft_p50_ms=median_or_none(values(9)),
        median_itl_p50_ms=median_or_none(values(10)),
        max_energy_relative_bound=max(
            (r[12] / r[11] for r in ok if r[12] is not None and r[11]), default=None
        ),
        flags=sorted(flags),
        energy_unavailable_reasons=sorted({r[14] for r in ok if r[14]}),
        net_energy_unavailable_reasons=sorted({r[15] for r in ok if r[15]}),
        failure_reasons=sorted({str(r[4]) for r in failed if r[4] is not None}),
    )
