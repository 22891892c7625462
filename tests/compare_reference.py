"""``lem compare`` as it was before issue 16, kept as the reference the fast path is
checked against: every experiment's rows read through ``table.grouped_rows`` (payloads
decoded, as ``results export`` reads them), matched key by key, and each metric tested
with ``statistics.variance`` (exact, slow) in Welch's t-test."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lem.coordinator.results.columns import CONFIG_KINDS, KINDS, coerce
from lem.coordinator.results.compare import (
    COSMETIC_FIELDS,
    METRICS,
    REASON_COLUMNS,
    CampaignComparison,
    ExperimentRef,
    MetricComparison,
    NotCompared,
    PairComparison,
)
from lem.coordinator.results.significance import two_sided_p
from lem.coordinator.results.table import grouped_rows, open_for_reading, resolve_campaign_ids

Row = dict[str, Any]


def welch_p(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None, float]:
    """t, df and two-sided p of Welch's test, variances by ``statistics.variance``."""
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    se2_a = statistics.variance(a) / len(a)
    se2_b = statistics.variance(b) / len(b)
    se2 = se2_a + se2_b
    diff = mean_b - mean_a
    if se2 == 0.0:
        return (0.0, None, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), None, 0.0)
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (se2_a * se2_a / (len(a) - 1) + se2_b * se2_b / (len(b) - 1))
    return t, df, two_sided_p(t, df)


def compare_metric(
    metric: str, a: Sequence[float], b: Sequence[float], alpha: float
) -> MetricComparison:
    mean_a = statistics.fmean(a) if a else None
    mean_b = statistics.fmean(b) if b else None
    delta = delta_pct = None
    if mean_a is not None and mean_b is not None:
        delta = mean_b - mean_a
        delta_pct = delta / mean_a * 100.0 if mean_a else None
    if len(a) < 2 or len(b) < 2:
        verdict = f"too few cycles (A: {len(a)}, B: {len(b)}; need 2 a side)"
        return MetricComparison(
            metric, len(a), len(b), mean_a, mean_b, delta, delta_pct, None, None, None, None,
            verdict,
        )  # fmt: skip
    t, df, p = welch_p(a, b)
    significant = p < alpha
    verdict = (
        f"significant (p={p:.2g})" if significant else f"no significant difference (p={p:.2g})"
    )
    return MetricComparison(
        metric, len(a), len(b), mean_a, mean_b, delta, delta_pct, t, df, p, significant, verdict
    )


def _key(setup: Row, ignored: set[str]) -> tuple[object, ...]:
    return tuple(
        coerce(KINDS[f"config.{leaf}"], setup[f"config.{leaf}"])
        for leaf in CONFIG_KINDS
        if leaf not in ignored
    )


def _ref(setup: Row, rows: list[Row]) -> ExperimentRef:
    return ExperimentRef(
        campaign_id=setup["campaign_id"],
        experiment_id=setup["experiment_id"],
        position=setup["experiment_position"],
        name=setup["experiment_name"],
        cycles_ok=sum(1 for r in rows if r["status"] == "ok"),
    )


def _values(rows: list[Row], metric: str) -> list[float]:
    return [r[metric] for r in rows if r["status"] == "ok" and r[metric] is not None]


def _all_null(rows: list[Row], metric: str) -> bool:
    ok = [r for r in rows if r["status"] == "ok"]
    return bool(ok) and all(r[metric] is None for r in ok)


def _reason(rows: list[Row], metric: str) -> str | None:
    column = REASON_COLUMNS.get(metric)
    if column is None:
        return None
    found = [r[column] for r in rows if r["status"] == "ok" and r[column]]
    return "; ".join(dict.fromkeys(found)) or None


def _locks(rows: list[Row]) -> set[str]:
    found = set()
    for r in rows:
        if r["status"] != "ok":
            continue
        sha = r.get("engine_lock_sha256")
        label = f"{r.get('engine_lock')}@{sha[:12]}" if sha else "unrecorded"
        found.add(label + ("+differs" if r.get("engine_lock_matches") is False else ""))
    return found


def lock_mismatch(rows_a: list[Row], rows_b: list[Row]) -> str | None:
    a, b = _locks(rows_a), _locks(rows_b)
    if not a or not b or (a == b and not any(x.endswith("+differs") for x in a | b)):
        return None
    if a == b:
        return f"same lock, but an environment differed from it: {', '.join(sorted(a))}"
    return f"different engine locks: A {', '.join(sorted(a))}; B {', '.join(sorted(b))}"


def compare_campaigns(
    store_a: Path,
    campaign_a: str,
    campaign_b: str,
    *,
    store_b: Path | None = None,
    alpha: float = 0.05,
    ignore: Sequence[str] = (),
) -> CampaignComparison:
    ignored = {*COSMETIC_FIELDS, *ignore}
    side_a = grouped_rows(store_a, [campaign_a])
    side_b = grouped_rows(store_b if store_b is not None else store_a, [campaign_b])
    ids = (
        _campaign_id(side_a, store_a, campaign_a),
        _campaign_id(side_b, store_b or store_a, campaign_b),
    )
    waiting: dict[tuple[object, ...], list[tuple[Row, list[Row]]]] = {}
    for setup, rows in side_b:
        waiting.setdefault(_key(setup, ignored), []).append((setup, rows))
    result = CampaignComparison(ids[0], ids[1], alpha, sorted(ignored))
    for setup_a, rows_a in side_a:
        candidates = waiting.get(_key(setup_a, ignored))
        if not candidates:
            result.only_a.append(_ref(setup_a, rows_a))
            continue
        setup_b, rows_b = candidates.pop(0)
        metrics: list[MetricComparison] = []
        not_compared: list[NotCompared] = []
        for m in METRICS:
            null_a, null_b = _all_null(rows_a, m), _all_null(rows_b, m)
            if null_a or null_b:
                not_compared.append(
                    NotCompared(
                        m,
                        null_a,
                        null_b,
                        _reason(rows_a, m) if null_a else None,
                        _reason(rows_b, m) if null_b else None,
                    )
                )
            elif _values(rows_a, m) or _values(rows_b, m):
                metrics.append(compare_metric(m, _values(rows_a, m), _values(rows_b, m), alpha))
        result.pairs.append(
            PairComparison(
                _ref(setup_a, rows_a),
                _ref(setup_b, rows_b),
                metrics,
                lock_mismatch(rows_a, rows_b),
                not_compared,
            )
        )
    for left in waiting.values():
        result.only_b.extend(_ref(setup, rows) for setup, rows in left)
    result.only_b.sort(key=lambda r: r.position)
    return result


def _campaign_id(side: list[tuple[Row, list[Row]]], store: Path, wanted: str) -> str:
    if side:
        return str(side[0][0]["campaign_id"])
    conn, _ = open_for_reading(store)
    try:
        return resolve_campaign_ids(conn, [wanted])[0]
    finally:
        conn.close()
