"""``lem results show`` at any size: every row of a small campaign (or with ``--all``), a
summary of a large one.

A campaign of more than ``SUMMARY_ABOVE`` experiments (or a ``--where`` that keeps more)
shows, under the usual header: the axes its configs sweep with their values, how many
experiments and cycles are ok, failed and without energy (with the reasons), the flags and
how many experiments carry each, the ``RANKED`` best and worst experiments by median
J/token (by tok/s where no experiment has energy, saying so) as rows of the usual table,
and how many experiments are not listed. ``--where`` picks experiments by config leaf or
column (overview.py); ``--all`` lists every row. At or below the threshold the output is
the full table, exactly as it always was.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.console import RenderableType
from rich.text import Text

from lem.coordinator.results.overview import (
    Brief,
    CampaignRead,
    Condition,
    swept_axes,
    values_of,
    where,
)
from lem.coordinator.results.view import (
    FLAG_MEANINGS,
    HIGH_CV_MEANING,
    Notes,
    experiment_table,
    render_campaign_detail,
    render_header,
)
from lem.protocol.bounds import printable

SUMMARY_ABOVE = 50  # experiments: above this, a summary instead of every row
RANKED = 5  # best and worst experiments listed in a summary
LISTED_VALUES = 12  # an axis with more distinct values shows its count and range
_LABEL = 14  # width of the header's labels


@dataclass(frozen=True)
class Ranking:
    """The best and worst experiments by one figure; ``unranked``: those without it."""

    by: str  # "J/token" or "tok/s"
    best: list[Brief]
    worst: list[Brief]
    unranked: int


def rank(briefs: Sequence[Brief], count: int = RANKED) -> Ranking | None:
    """Best (lowest) and worst ``count`` by median J/token over ok cycles; by median tok/s
    (best: highest) when no experiment has J/token; None when none has either. Ties go
    to the earlier experiment; ``worst`` leaves out those already in ``best``."""
    by_j = [b for b in briefs if b.median_energy_per_output_token_j is not None]
    if by_j:
        by, ranked, low_is_best = "J/token", by_j, True
        figures = {b.position: b.median_energy_per_output_token_j or 0.0 for b in by_j}
    else:
        ranked = [b for b in briefs if b.median_output_tokens_per_s is not None]
        by, low_is_best = "tok/s", False
        figures = {b.position: b.median_output_tokens_per_s or 0.0 for b in ranked}
    if not ranked:
        return None
    sign = 1 if low_is_best else -1
    best = heapq.nsmallest(count, ranked, key=lambda b: (sign * figures[b.position], b.position))
    worst = heapq.nsmallest(
        count + len(best), ranked, key=lambda b: (-sign * figures[b.position], b.position)
    )
    in_best = {b.position for b in best}
    worst = [b for b in worst if b.position not in in_best][:count]
    return Ranking(by, best, worst, len(briefs) - len(ranked))


def render_show(
    read: CampaignRead, conditions: Sequence[Condition] = (), show_all: bool = False
) -> list[RenderableType]:
    """What ``lem results show`` prints for ``read``: see the module doc."""
    if not conditions and (show_all or read.experiment_count <= SUMMARY_ABOVE):
        return render_campaign_detail(read.detail())
    chosen = where(read.briefs, conditions)
    out: list[RenderableType] = [render_header(read.facts)]
    shown = " and ".join(printable(str(c)) for c in conditions)
    if conditions:
        out.append(Text(f"Where {shown}: {len(chosen)} of {len(read.briefs)} experiments"))
    if not chosen:
        out.append(_no_match(read.briefs, conditions))
        return out
    notes = Notes()
    if show_all or len(chosen) <= SUMMARY_ABOVE:
        return [*out, experiment_table(read.summaries(chosen), notes), notes.render()]
    axes = swept_axes([b.config for b in chosen])
    first_axis = next(iter(axes.items()), ("status", ["failed"]))
    example = f"{first_axis[0]}={shown_value(first_axis[1][0])}"
    out += [_axes(axes), _counts(chosen), _flags(chosen)]
    tables = []
    listed: set[int] = set()
    ranking = rank(chosen)
    if ranking is not None:
        for title, briefs in _ranked_titles(ranking):
            tables.append(experiment_table(read.summaries(briefs), notes, title))
            listed.update(b.position for b in briefs)
    if conditions:  # a filter's first rows, in run order
        first = chosen[:SUMMARY_ABOVE]
        title = f"the first {len(first)} of the {len(chosen)} experiments where {shown}"
        tables.append(experiment_table(read.summaries(first), notes, title))
        listed.update(b.position for b in first)
    for table in tables[:-1]:
        table.caption = None  # the column legend once, under the last table
    for table in tables:
        out += [Text(""), table]
    if (legend := notes.render()).plain:
        out.append(legend)
    which = " matching" if conditions else ""
    out.append(
        Text(
            f"\n{_count(len(chosen) - len(listed))} not listed: `--all` lists every"
            f"{which} one, `--where AXIS=VALUE` filters (e.g. `--where {example}`)",
            style="bold",
        )
    )
    return out


def _ranked_titles(ranking: Ranking) -> list[tuple[str, list[Brief]]]:
    why = ""
    if ranking.by == "tok/s":
        why = " (J/token is null in every experiment)"
    low, high = ("lowest", "highest") if ranking.by == "J/token" else ("highest", "lowest")
    unranked = f"; {ranking.unranked} without {ranking.by} not ranked" if ranking.unranked else ""
    best = f"best {len(ranking.best)} by {ranking.by}{why} ({low} median over ok cycles{unranked})"
    titles = [(best, ranking.best)]
    if ranking.worst:
        worst = f"worst {len(ranking.worst)} by {ranking.by} ({high} median over ok cycles)"
        titles.append((worst, ranking.worst))
    return titles


def _count(n: int) -> str:
    return f"{n} experiment" if n == 1 else f"{n} experiments"


def shown_value(value: Any) -> str:
    """An axis value as text: null, true/false, numbers as written, text as it is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int, str)):
        return printable(str(value))
    return printable(msgspec.json.encode(value).decode())


def _values(values: Sequence[Any]) -> str:
    """Every value, or beyond ``LISTED_VALUES`` their count and range (numbers) or the
    first few."""
    if len(values) <= LISTED_VALUES:
        return ", ".join(shown_value(v) for v in values)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        return f"{len(values)} values, {shown_value(values[0])} to {shown_value(values[-1])}"
    first = ", ".join(shown_value(v) for v in values[:LISTED_VALUES])
    return f"{len(values)} values: {first}, …"


def _section(title: str, lines: Sequence[tuple[str, str]]) -> Text:
    text = Text()
    text.append(f"\n{title}\n", style="bold")
    width = max((len(label) for label, _ in lines), default=0) + 2
    for label, value in lines:
        text.append(f"  {label:<{width}}")
        text.append(f"{value}\n")
    text.rstrip()
    return text


def _axes(axes: Mapping[str, Sequence[Any]]) -> Text:
    if not axes:
        return Text("\nSwept axes: none (the configs differ in their names only)", style="bold")
    lines = [(printable(name), _values(values)) for name, values in axes.items()]
    return _section(f"Swept axes ({len(axes)}: config fields that differ)", lines)


def _reasons(counts: Counter[str]) -> str:
    return "; ".join(f"{printable(r)} ({n})" for r, n in counts.most_common())


def _counts(briefs: Sequence[Brief]) -> Text:
    statuses = Counter(b.status for b in briefs)
    ok = sum(b.cycles_ok for b in briefs)
    failed = sum(b.cycles_failed for b in briefs)
    with_energy = sum(b.with_energy for b in briefs)
    failures = Counter(r for b in briefs for r in b.failure_reasons)
    nulls = Counter(r for b in briefs for r in b.null_energy_reasons)
    experiments = (
        f"{len(briefs)}: {statuses['ok']} ok, {statuses['failed']} with a failed cycle, "
        f"{statuses['pending']} with no cycle stored"
    )
    cycles = f"{ok} ok, {failed} failed" + (f": {_reasons(failures)}" if failed else "")
    energy = f"{with_energy} of the {ok} ok cycles have J/token"
    if ok - with_energy:
        energy += f"; null in {ok - with_energy}: {_reasons(nulls)}"
    return _section(
        "Counts", [("Experiments", experiments), ("Cycles", cycles), ("Energy", energy)]
    )


def _flags(briefs: Sequence[Brief]) -> Text:
    counts = Counter(f for b in briefs for f in b.flags)
    if not counts:
        return Text("\nFlags: none", style="bold")
    meanings = {**FLAG_MEANINGS, "high_cv": HIGH_CV_MEANING}
    lines = [
        (printable(flag), f"{_count(n)}: {meanings.get(flag, 'see lem docs methodology')}")
        for flag, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return _section("Flags (experiments carrying each; --where flag=NAME lists them)", lines)


def _no_match(briefs: Sequence[Brief], conditions: Sequence[Condition]) -> Text:
    keys = dict.fromkeys(c.key for c in conditions)
    found = [f"{key}: {_values(values_of(briefs, key)) or 'none'}" for key in keys]
    return Text(f"No experiment matches. Values in this campaign: {'; '.join(found)}")
