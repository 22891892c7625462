"""``lem compare A B``: the matching experiments of two campaigns, metric by metric.

Matching rule: two experiments match when every field of their effective configs
(``config.*`` columns, results_columns.py) agrees except cosmetic ones — ``name`` — and
those the caller ignores (``--ignore model.dtype`` compares campaigns that differ in that
field on purpose). When several experiments of one campaign share a key, the k-th of A
pairs with the k-th of B (run order). The rest are listed as unmatched.

Each matched pair is tested metric by metric on its ok cycles' values: Welch's t-test
(significance.py) of B against A, two-sided, at level ``alpha``. Deltas are B − A (in the
metric's unit) and (B − A) / A in percent.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lem.coordinator.results.columns import CONFIG_KINDS, KINDS, coerce
from lem.coordinator.results.significance import welch_t_test
from lem.coordinator.results.table import Row, grouped_rows, open_for_reading, resolve_campaign_ids

COSMETIC_FIELDS = ("name",)
DEFAULT_ALPHA = 0.05

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


@dataclass(frozen=True)
class ExperimentRef:
    """One experiment of a compared campaign."""

    campaign_id: str
    experiment_id: str
    position: int
    name: str | None
    cycles_ok: int


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one matched pair. Means and ``delta`` (B − A) are in the metric's
    unit; ``delta_pct`` is (B − A) / A × 100. ``t``, ``df``, ``p``: Welch's test (None when
    a side has fewer than 2 values). ``significant`` is None when no test ran."""

    metric: str
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    delta: float | None
    delta_pct: float | None
    t: float | None
    df: float | None
    p: float | None
    significant: bool | None
    verdict: str


@dataclass(frozen=True)
class NotCompared:
    """A metric of a matched pair that could not be compared: null in every ok cycle of
    side A, of side B, or of both (e.g. energy on CPU, where nothing meters it).
    ``reason_a``/``reason_b``: the reasons stored with that side's nulls ('; '-joined),
    None where the side had the metric or stored no reason."""

    metric: str
    null_a: bool
    null_b: bool
    reason_a: str | None
    reason_b: str | None


@dataclass(frozen=True)
class PairComparison:
    """One matched pair. ``lock_mismatch``: why its sides' engine environments differ
    (different locks, or one that did not hold its lock exactly); None when they agree.
    ``not_compared``: the metrics left out of ``metrics`` because a side has them null."""

    a: ExperimentRef
    b: ExperimentRef
    metrics: list[MetricComparison]
    lock_mismatch: str | None = None
    not_compared: list[NotCompared] = field(default_factory=list)


@dataclass(frozen=True)
class CampaignComparison:
    """``lem compare``'s answer: matched pairs, the unmatched experiments of each side."""

    campaign_a: str
    campaign_b: str
    alpha: float
    ignored_fields: list[str]
    pairs: list[PairComparison] = field(default_factory=list)
    only_a: list[ExperimentRef] = field(default_factory=list)
    only_b: list[ExperimentRef] = field(default_factory=list)


def compare_metric(
    metric: str, a: Sequence[float], b: Sequence[float], alpha: float
) -> MetricComparison:
    """Means, deltas and Welch's verdict for one metric's per-cycle values of A and B."""
    mean_a = statistics.fmean(a) if a else None
    mean_b = statistics.fmean(b) if b else None
    delta = delta_pct = None
    if mean_a is not None and mean_b is not None:
        delta = mean_b - mean_a
        delta_pct = delta / mean_a * 100.0 if mean_a else None
    if len(a) < 2 or len(b) < 2:
        verdict = f"too few cycles (A: {len(a)}, B: {len(b)}; need 2 a side)"
        return MetricComparison(
            metric,
            len(a),
            len(b),
            mean_a,
            mean_b,
            delta,
            delta_pct,
            None,
            None,
            None,
            None,
            verdict,
        )
    test = welch_t_test(a, b)
    significant = test.p < alpha
    verdict = (
        f"significant (p={test.p:.2g})"
        if significant
        else f"no significant difference (p={test.p:.2g})"
    )
    return MetricComparison(
        metric,
        len(a),
        len(b),
        mean_a,
        mean_b,
        delta,
        delta_pct,
        test.t,
        test.df,
        test.p,
        significant,
        verdict,
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
    """Whether the side has ok cycles and ``metric`` is null in every one of them."""
    ok = [r for r in rows if r["status"] == "ok"]
    return bool(ok) and all(r[metric] is None for r in ok)


def _reason(rows: list[Row], metric: str) -> str | None:
    column = REASON_COLUMNS.get(metric)
    if column is None:
        return None
    found = [r[column] for r in rows if r["status"] == "ok" and r[column]]
    return "; ".join(dict.fromkeys(found)) or None


def _locks(rows: list[Row]) -> set[str]:
    """The engine locks of a side's ok cycles: ``name@sha256[:12]`` (``+differs`` where the
    environment did not hold the lock exactly; ``unrecorded`` before lem recorded locks)."""
    found = set()
    for r in rows:
        if r["status"] != "ok":
            continue
        sha = r.get("engine_lock_sha256")
        label = f"{r.get('engine_lock')}@{sha[:12]}" if sha else "unrecorded"
        found.add(label + ("+differs" if r.get("engine_lock_matches") is False else ""))
    return found


def lock_mismatch(rows_a: list[Row], rows_b: list[Row]) -> str | None:
    """Why two sides' engine environments are not comparable as the same software, or None."""
    a, b = _locks(rows_a), _locks(rows_b)
    if not a or not b or (a == b and not any(x.endswith("+differs") for x in a | b)):
        return None
    if a == b:
        return f"same lock, but an environment differed from it: {', '.join(sorted(a))}"
    return f"different engine locks: A {', '.join(sorted(a))}; B {', '.join(sorted(b))}"


def compare_campaigns(
    store_a: str | Path,
    campaign_a: str,
    campaign_b: str,
    *,
    store_b: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    ignore: Sequence[str] = (),
) -> CampaignComparison:
    """Compare campaign B (in ``store_b``, default ``store_a``) against campaign A.

    Campaigns are ids or unique id prefixes. ``ignore``: dotted config fields left out of
    the matching key besides ``name``. Raises ``StoreError`` for an unknown campaign,
    ``ValueError`` for an unknown field or an alpha outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    unknown = [f for f in ignore if f not in CONFIG_KINDS]
    if unknown:
        raise ValueError(
            f"--ignore: no config field {unknown[0]!r} (fields as in config.* columns)"
        )
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


def _campaign_id(side: list[tuple[Row, list[Row]]], store: str | Path, wanted: str) -> str:
    """The full id of a resolved campaign (from its rows, or the store for an empty one)."""
    if side:
        return str(side[0][0]["campaign_id"])
    conn, _ = open_for_reading(store)
    try:
        return resolve_campaign_ids(conn, [wanted])[0]
    finally:
        conn.close()
