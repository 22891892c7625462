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
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import msgspec

from lem.coordinator.results.columns import CONFIG_KINDS
from lem.coordinator.results.compare_keys import KeyReader
from lem.coordinator.results.compare_read import (
    METRICS,
    REASON_COLUMNS,
    SideExperiment,
    read_side,
)
from lem.coordinator.results.significance import welch_from_means
from lem.coordinator.store.reading import connect_read_only, resolve_campaign_ids

__all__ = [
    "METRICS",
    "REASON_COLUMNS",
    "CampaignComparison",
    "compare_campaigns",
    "compare_metric",
    "lock_mismatch",
]

COSMETIC_FIELDS = ("name",)
DEFAULT_ALPHA = 0.05


class ExperimentRef(msgspec.Struct, frozen=True):
    """One experiment of a compared campaign."""

    campaign_id: str
    experiment_id: str
    position: int
    name: str | None
    cycles_ok: int


class MetricComparison(msgspec.Struct, frozen=True):
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


class NotCompared(msgspec.Struct, frozen=True):
    """A metric of a matched pair that could not be compared: null in every ok cycle of
    side A, of side B, or of both (e.g. energy on CPU, where nothing meters it).
    ``reason_a``/``reason_b``: the reasons stored with that side's nulls ('; '-joined),
    None where the side had the metric or stored no reason."""

    metric: str
    null_a: bool
    null_b: bool
    reason_a: str | None
    reason_b: str | None


class PairComparison(msgspec.Struct, frozen=True):
    """One matched pair. ``lock_mismatch``: why its sides' engine environments differ
    (different locks, or one that did not hold its lock exactly); None when they agree.
    ``not_compared``: the metrics left out of ``metrics`` because a side has them null."""

    a: ExperimentRef
    b: ExperimentRef
    metrics: list[MetricComparison]
    lock_mismatch: str | None = None
    not_compared: list[NotCompared] = []


class CampaignComparison(msgspec.Struct, frozen=True):
    """``lem compare``'s answer: matched pairs, the unmatched experiments of each side."""

    campaign_a: str
    campaign_b: str
    alpha: float
    ignored_fields: list[str]
    pairs: list[PairComparison] = []
    only_a: list[ExperimentRef] = []
    only_b: list[ExperimentRef] = []


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
    if mean_a is None or mean_b is None or len(a) < 2 or len(b) < 2:
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
    test = welch_from_means(a, b, mean_a, mean_b)
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


def lock_mismatch(a: set[str], b: set[str]) -> str | None:
    """Why two sides' engine environments (the lock labels of their ok cycles,
    ``compare_read.lock_label``) are not comparable as the same software, or None."""
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
    keys = KeyReader([leaf for leaf in CONFIG_KINDS if leaf not in ignored])
    conn_a, _ = connect_read_only(Path(store_a))
    try:
        id_a = resolve_campaign_ids(conn_a, [campaign_a])[0]
        if store_b is None:
            id_b = resolve_campaign_ids(conn_a, [campaign_b])[0]
            side_b = read_side(conn_a, id_b, keys)
        side_a = read_side(conn_a, id_a, keys)
    finally:
        conn_a.close()
    if store_b is not None:
        conn_b, _ = connect_read_only(Path(store_b))
        try:
            id_b = resolve_campaign_ids(conn_b, [campaign_b])[0]
            side_b = read_side(conn_b, id_b, keys)
        finally:
            conn_b.close()
    return match_and_test(side_a, side_b, CampaignComparison(id_a, id_b, alpha, sorted(ignored)))


def match_and_test(
    side_a: list[SideExperiment], side_b: list[SideExperiment], result: CampaignComparison
) -> CampaignComparison:
    """Pair the sides' experiments by key (a hash join: the k-th of A with a key takes the
    k-th of B with it) and test each pair metric by metric; fills and returns ``result``."""
    waiting: dict[tuple[object, ...], deque[SideExperiment]] = {}
    mismatches: dict[tuple[frozenset[str], frozenset[str]], str | None] = {}
    for e in side_b:
        waiting.setdefault(e.key, deque()).append(e)
    for a in side_a:
        candidates = waiting.get(a.key)
        if not candidates:
            result.only_a.append(_ref(result.campaign_a, a))
            continue
        b = candidates.popleft()
        metrics: list[MetricComparison] = []
        not_compared: list[NotCompared] = []
        for m in METRICS:
            null_a, null_b = a.all_null(m), b.all_null(m)
            if null_a or null_b:
                not_compared.append(
                    NotCompared(
                        m,
                        null_a,
                        null_b,
                        a.reason(m) if null_a else None,
                        b.reason(m) if null_b else None,
                    )
                )
                continue
            values_a, values_b = a.values_of(m), b.values_of(m)
            if values_a or values_b:
                metrics.append(compare_metric(m, values_a, values_b, result.alpha))
        locks = (frozenset(a.locks), frozenset(b.locks))
        if locks not in mismatches:  # a few distinct ones in a campaign: each said once
            mismatches[locks] = lock_mismatch(a.locks, b.locks)
        result.pairs.append(
            PairComparison(
                _ref(result.campaign_a, a),
                _ref(result.campaign_b, b),
                metrics,
                mismatches[locks],
                not_compared,
            )
        )
    for left in waiting.values():
        result.only_b.extend(_ref(result.campaign_b, e) for e in left)
    result.only_b.sort(key=lambda r: r.position)
    return result


def _ref(campaign_id: str, e: SideExperiment) -> ExperimentRef:
    return ExperimentRef(campaign_id, e.experiment_id, e.position, e.name, e.cycles_ok)
