"""What ``lem compare`` prints: the comparison table and the notes under it.

A comparison of at most ``SMALL_PAIRS`` matched pairs (or any with ``--all``) prints every
row in plan order and every note pair by pair. A larger one prints its significant rows
first — smallest p, then largest |Δ %| — at most ``SHOWN_ROWS`` of them, then counts of the
rest; each note (engine environments that differ, metrics not compared, experiments left
unmatched) is one line with its count and a few example pairs. ``--json`` has everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lem.coordinator.cli.common import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lem.coordinator.results.compare import (
        CampaignComparison,
        ExperimentRef,
        MetricComparison,
        PairComparison,
    )

SMALL_PAIRS = 50  # up to this many matched pairs: every row and note, as always
SHOWN_ROWS = 40  # beyond: at most this many significant rows
EXAMPLES = 3  # pairs named as examples in a grouped note
LISTED_UNMATCHED = 10  # unmatched experiments named before "and N more"

Row = tuple["PairComparison", "MetricComparison"]


def print_comparison(console: Console, result: CampaignComparison, show_all: bool) -> None:
    """Print ``result`` in full (small, or ``show_all``) or significant rows first."""
    full = show_all or len(result.pairs) <= SMALL_PAIRS
    rows = [(pair, m) for pair in result.pairs for m in pair.metrics]
    if full:
        console.print(table(result, rows))
    else:
        _print_summary(console, result, rows)
    for line in lock_lines(result, full):
        console.print(line, style="yellow", markup=False)
    for line in not_compared_lines(result, full):
        console.print(line, style="yellow", markup=False)
    for side, refs in (("A", result.only_a), ("B", result.only_b)):
        if refs:
            console.print(
                f"Only in {side} (no matching experiment): {printable(_refs(refs, full))}",
                markup=False,
            )


def _print_summary(console: Console, result: CampaignComparison, rows: list[Row]) -> None:
    """The significant rows, most significant first, and what the others were."""
    significant = sorted((r for r in rows if r[1].significant), key=_significance)
    tested = sum(1 for _, m in rows if m.significant is not None)
    untested = len(rows) - tested
    if significant:
        console.print(table(result, significant[:SHOWN_ROWS], sorted_rows=True))
        shown = (
            f"Showing {SHOWN_ROWS:,} of {len(significant):,}"
            if len(significant) > SHOWN_ROWS
            else f"All {len(significant):,}"
        )
        console.print(
            f"{shown} significant row(s), most significant first (smallest p, then largest "
            f"|Δ %|); --all lists every row, --json every pair.",
            markup=False,
        )
    else:
        console.print(
            printable(f"lem compare: A = {result.campaign_a}, B = {result.campaign_b}"),
            markup=False,
        )
    console.print(
        f"{tested - len(significant):,} of {tested:,} tested pair × metric row(s) show no "
        f"significant difference ({len(result.pairs):,} matched pairs"
        + (f"; {untested:,} row(s) not tested: too few cycles" if untested else "")
        + ").",
        markup=False,
    )
    console.print(
        f"alpha={result.alpha:g} is per test: where nothing differs, about "
        f"{result.alpha * 100:g}% of tests still come out significant by chance "
        f"(≈{result.alpha * tested:,.0f} of these {tested:,}).",
        markup=False,
    )


def _significance(row: Row) -> tuple[float, float, int, int]:
    """Sort key: smallest p, then largest |Δ %| (none last), then plan order."""
    pair, m = row
    effect = abs(m.delta_pct) if m.delta_pct is not None else -1.0
    return (m.p if m.p is not None else 1.0, -effect, pair.a.position, pair.b.position)


def _label(pair: PairComparison) -> str:
    return f"A#{pair.a.position} / B#{pair.b.position}"


def _pairs(labels: list[str], total: int, full: bool) -> str:
    """The pairs a note is about: all named (full), else a count and a few examples."""
    if len(labels) == total > 1:
        return f"every pair ({len(labels)})"
    if full or len(labels) <= EXAMPLES:
        return ", ".join(labels)
    return f"{len(labels):,} pairs (e.g. {', '.join(labels[:EXAMPLES])})"


def lock_lines(result: CampaignComparison, full: bool) -> list[str]:
    """Pairs whose sides ran under different engine environments: a line per pair (full),
    else one line per distinct difference with its pairs counted."""
    if full:
        return [
            printable(f"Engine environments differ for {_label(p)}: {p.lock_mismatch}")
            for p in result.pairs
            if p.lock_mismatch
        ]
    pairs_of: dict[str, list[str]] = {}
    for pair in result.pairs:
        if pair.lock_mismatch:
            pairs_of.setdefault(pair.lock_mismatch, []).append(_label(pair))
    return [
        printable(
            f"Engine environments differ for {_pairs(labels, len(result.pairs), full)}: {why}"
        )
        for why, labels in pairs_of.items()
    ]


def not_compared_lines(result: CampaignComparison, full: bool = True) -> list[str]:
    """One line per metric left uncompared for the same cause: which pairs, which side
    had it null in every ok cycle, and the reasons stored with those nulls."""
    from lem.coordinator.results.compare import METRICS

    pairs_of: dict[tuple[str, str], list[str]] = {}
    for pair in result.pairs:
        for n in pair.not_compared:
            sides = " and ".join(s for s, null in (("A", n.null_a), ("B", n.null_b)) if null)
            reasons = [
                f"{side}: {reason or 'no reason stored'}"
                for side, null, reason in (("A", n.null_a, n.reason_a), ("B", n.null_b, n.reason_b))
                if null
            ]
            if n.null_a and n.null_b and n.reason_a == n.reason_b:
                reasons = [f"both: {n.reason_a or 'no reason stored'}"]
            why = f"null in every ok cycle of {sides} ({'; '.join(reasons)})"
            pairs_of.setdefault((METRICS.get(n.metric, n.metric), why), []).append(_label(pair))
    metrics_of: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (metric, why), labels in pairs_of.items():
        metrics_of.setdefault((why, tuple(labels)), []).append(metric)
    lines = []
    for (why, pair_labels), metrics in metrics_of.items():
        pairs = _pairs(list(pair_labels), len(result.pairs), full)
        lines.append(f"{', '.join(metrics)} not compared for {pairs}: {why}")
    return [printable(line) for line in lines]


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def _refs(refs: list[ExperimentRef], full: bool) -> str:
    named = refs if full or len(refs) <= LISTED_UNMATCHED else refs[:LISTED_UNMATCHED]
    text = ", ".join(f"#{r.position} {r.name or r.experiment_id}" for r in named)
    if len(named) < len(refs):
        text = f"{len(refs):,} experiments: {text} and {len(refs) - len(named):,} more"
    return text


def table(result: CampaignComparison, rows: Iterable[Row], sorted_rows: bool = False) -> Table:
    """The comparison table: one row per pair and metric (``sorted_rows``: the significant
    rows, most significant first)."""
    from rich.table import Table
    from rich.text import Text

    from lem.coordinator.results.compare import METRICS

    title = f"lem compare: A = {result.campaign_a}, B = {result.campaign_b}"
    if sorted_rows:
        title += " (significant differences, most significant first)"
    table = Table(title=Text(printable(title)), title_justify="left")
    for header in ("A#", "B#", "Experiment", "Metric", "n A/B", "A mean", "B mean"):
        table.add_column(header, no_wrap=header != "Experiment", overflow="fold")
    for header in ("Δ (B−A)", "Δ %", "p", "Verdict"):
        table.add_column(header, no_wrap=True)
    for pair, m in rows:
        name = pair.a.name or pair.a.experiment_id
        if pair.b.name != pair.a.name:
            name += f" / {pair.b.name or pair.b.experiment_id}"
        style = "" if m.significant is None else ("bold red" if m.significant else "green")
        table.add_row(
            str(pair.a.position),
            str(pair.b.position),
            Text(printable(name)),
            METRICS.get(m.metric, m.metric),
            f"{m.n_a}/{m.n_b}",
            _num(m.mean_a),
            _num(m.mean_b),
            _num(m.delta, "+.3g"),
            _num(m.delta_pct, "+.2f"),
            _num(m.p, ".2g"),
            Text(m.verdict, style=style),
        )
    if not result.pairs:
        table.caption = "no matching experiments"
    else:
        table.caption = (
            f"Means over ok cycles; Welch's t-test on per-cycle values, two-sided, "
            f"alpha={result.alpha:g} per test (with many rows, some 'significant' verdicts "
            f"are expected by chance). Matched on the effective config except: "
            f"{', '.join(result.ignored_fields)}. Method: lem docs results"
        )
    table.caption_justify = "left"
    return table
