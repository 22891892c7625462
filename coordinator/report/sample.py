"""Which experiments the report of a large campaign shows one by one.

Up to ``SAMPLE_ABOVE`` experiments the page shows every experiment (no sample). Above it,
the per-axis plots and the Pareto fronts still place every experiment, but the tables,
timelines, latency curves and configs cover a bounded sample: the experiments the user
named (``--experiment``), the Pareto fronts (at most ``MAX_FRONT`` of each, evenly along
it), the flagged ones (the first ``MAX_FLAGGED`` in plan order); the summary table adds
the ``BEST_WORST`` lowest and highest J/token. Everything is in the CSV beside the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lem.coordinator.report.rows import ExperimentRow, pareto_front
from lem.protocol.errors import BadInput

SAMPLE_ABOVE = 50  # experiments; at or below, the page shows every one of them
MAX_FRONT = 20  # experiments per Pareto front shown one by one
MAX_FLAGGED = 20  # flagged experiments shown one by one
BEST_WORST = 10  # lowest and highest mean J/token added to the summary table


class UnknownExperiment(BadInput):
    """An ``--experiment`` that names no experiment of the campaign."""


@dataclass(frozen=True)
class Sample:
    """The experiments a large campaign's page shows one by one (ids), and why."""

    total: int  # experiments in the campaign
    shown: list[str]  # detailed (timelines, latency): named, then the fronts, then flagged
    table: list[str]  # the summary table's: ``shown`` and the best/worst, in plan order
    why: dict[str, list[str]]  # id → "named", "Pareto: throughput", "flagged", ...
    fronts: dict[str, int]  # front name → experiments on it (before the cap)
    flagged_total: int  # flagged experiments (before the cap)

    @property
    def left_out(self) -> int:
        """Experiments in neither the summary table nor the detailed sections."""
        return self.total - len(self.table)


def resolve_named(rows: Sequence[ExperimentRow], wanted: Sequence[str]) -> list[str]:
    """The ids of the experiments ``wanted`` names, in that order without repeats: each
    an experiment id, a name (every experiment of that name) or a plan position (``12``
    or ``#12``). ``UnknownExperiment`` for one that matches none."""
    by_id = {r.experiment_id: r for r in rows}
    by_name: dict[str, list[str]] = {}
    by_position = {r.position: r.experiment_id for r in rows}
    for r in rows:
        if r.name is not None:
            by_name.setdefault(r.name, []).append(r.experiment_id)
    found: list[str] = []
    for want in wanted:
        position = want.removeprefix("#")
        if want in by_id:
            ids = [want]
        elif want in by_name:
            ids = by_name[want]
        elif position.isdigit() and int(position) in by_position:
            ids = [by_position[int(position)]]
        else:
            last = max(by_position, default=None)
            span = "" if last is None else f" (positions 0–{last})"
            raise UnknownExperiment(
                f"--experiment {want!r}: no experiment of this campaign has that id, name "
                f"or position{span}"
            )
        found.extend(i for i in ids if i not in found)
    return found


def _evenly(items: list[ExperimentRow], limit: int) -> list[ExperimentRow]:
    """At most ``limit`` of ``items``, evenly spread, both ends kept."""
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def fronts(rows: Sequence[ExperimentRow]) -> dict[str, list[ExperimentRow]]:
    """The Pareto fronts the page draws (throughput, and TTFT where recorded), each
    against mean J/token, over the experiments with energy."""
    energy = [r for r in rows if r.mean_energy_per_output_token_j is not None]

    def j(r: ExperimentRow) -> float | None:
        return r.mean_energy_per_output_token_j

    found = {"throughput": pareto_front(energy, lambda r: r.median_output_tokens_per_s, j, True)}
    if any(r.median_ttft_p50_ms is not None for r in energy):
        found["time to first token"] = pareto_front(
            energy, lambda r: r.median_ttft_p50_ms, j, False
        )
    return {k: v for k, v in found.items() if v}


def _energy(row: ExperimentRow) -> float:
    return row.mean_energy_per_output_token_j or 0.0


def choose_sample(rows: Sequence[ExperimentRow], named: Sequence[str]) -> Sample | None:
    """The sample of a campaign above ``SAMPLE_ABOVE`` experiments (``named``: ids the user
    asked for); None at or below it (every experiment is shown)."""
    if len(rows) <= SAMPLE_ABOVE:
        return None
    why: dict[str, list[str]] = {}

    def add(ids: Sequence[str], reason: str) -> None:
        for i in ids:
            why.setdefault(i, []).append(reason)

    add(named, "named")
    found = fronts(rows)
    for what, front in found.items():
        add([r.experiment_id for r in _evenly(front, MAX_FRONT)], f"Pareto: {what}")
    flagged = [r for r in rows if r.all_flags]
    add([r.experiment_id for r in flagged[:MAX_FLAGGED]], "flagged")
    shown = list(why)
    energy = sorted(
        (r for r in rows if r.mean_energy_per_output_token_j is not None),
        key=_energy,
    )
    add([r.experiment_id for r in energy[:BEST_WORST]], "lowest J/token")
    add([r.experiment_id for r in energy[-BEST_WORST:][::-1]], "highest J/token")
    table = [r.experiment_id for r in rows if r.experiment_id in why]
    return Sample(
        total=len(rows),
        shown=shown,
        table=table,
        why=why,
        fronts={what: len(front) for what, front in found.items()},
        flagged_total=len(flagged),
    )
