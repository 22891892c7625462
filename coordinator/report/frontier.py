"""The load sweeps' figure (``workload.sweep``): J/token and goodput against the request
rate (or the concurrency level), with the SLO line — the energy-versus-SLO frontier.

One figure per sweep: the experiments that share every config value but the sweep's own
(its point, and the rate, arrival and concurrency it sets). J/token is the steady-state
figure where the measurement has one (docs/methodology.md), else the whole run's, the
median over ok cycles. A point *meets the SLO* when at least ``SLO_SHARE`` of its requests
met both latency targets; the vertical line marks the highest rate that does, and the
caption names the lowest J/token among the points that do.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from lem.coordinator.report.cycles import CycleMeasurement
from lem.coordinator.report.gather import CampaignData
from lem.coordinator.report.plots import Plot, drawing, svg_uri

SLO_SHARE = 0.9  # the share of requests within the SLOs that counts as meeting them
_SWEEP_FIELDS = frozenset(
    {"workload.sweep.point", "workload.rate_per_s", "workload.arrival", "workload.concurrency"}
) | {"name"}


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep, medians over its ok cycles."""

    name: str
    point: int
    x: float  # the offered rate (req/s), the probe's completed rate, or the concurrency
    j_per_token: float | None  # steady-state where measured, else whole-run
    steady: bool  # whether every cycle's J/token is the steady-state one
    good_share: float | None
    output_tokens_per_s: float | None
    saturated: bool


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _point(
    name: str, point: int, config: dict[str, object], cycles: list[CycleMeasurement]
) -> SweepPoint | None:
    if not cycles:
        return None
    by_rate = config.get("workload.sweep.rates") is not None
    rate = config.get("workload.rate_per_s")
    if by_rate and point == 0:  # the probe: its completed requests per second
        x = _median([m.work.num_prompts / m.work.duration_s for m in cycles if m.work.duration_s])
    elif by_rate:
        x = float(rate) if isinstance(rate, int | float) else None
    else:
        level = config.get("workload.concurrency")
        x = float(level) if isinstance(level, int | float) else None
    if x is None:
        return None

    def j_per_token(m: CycleMeasurement) -> float | None:
        if m.steady.steady_energy_per_output_token_j is not None:
            return m.steady.steady_energy_per_output_token_j
        if m.energy.energy_j is None or not m.work.output_tokens:
            return None
        return m.energy.energy_j / m.work.output_tokens

    return SweepPoint(
        name=name,
        point=point,
        x=x,
        j_per_token=_median([j_per_token(m) for m in cycles]),
        steady=all(m.steady.steady_energy_per_output_token_j is not None for m in cycles),
        good_share=_median([m.latency.goodput.good_share for m in cycles if m.latency.goodput]),
        output_tokens_per_s=_median(
            [m.work.output_tokens / m.work.duration_s for m in cycles if m.work.duration_s]
        ),
        saturated=any("load_above_capacity" in m.flags for m in cycles),
    )


def sweeps(data: CampaignData) -> list[tuple[str, bool, list[SweepPoint]]]:
    """(label, by rate, points in point order) of each sweep in the campaign."""
    measured: dict[str, list[CycleMeasurement]] = {}
    for cycle in data.cycles:
        if cycle.measurement is not None:
            measured.setdefault(cycle.experiment_id, []).append(cycle.measurement)
    groups: dict[str, tuple[str, bool, list[SweepPoint]]] = {}
    for info in data.experiments:
        point = info.config.get("workload.sweep.point")
        if not isinstance(point, int):
            continue
        shared = {k: v for k, v in info.config.items() if k not in _SWEEP_FIELDS}
        label = ", ".join(f"{a}={shared.get(a)}" for a in data.axes if a in shared) or "sweep"
        by_rate = info.config.get("workload.sweep.rates") is not None
        key = repr(sorted(shared.items(), key=str))
        found = _point(info.name or info.id, point, info.config, measured.get(info.id, []))
        points = groups.setdefault(key, (label, by_rate, []))[2]
        if found is not None:
            points.append(found)
    return [(label, rate, sorted(ps, key=lambda p: p.point)) for label, rate, ps in groups.values()]


def frontier_plots(data: CampaignData) -> list[Plot]:
    """One figure per sweep with J/token and goodput (or throughput) against the load."""
    return [_plot(label, by_rate, points) for label, by_rate, points in sweeps(data) if points]


def slo_frontier(points: Sequence[SweepPoint]) -> tuple[SweepPoint | None, SweepPoint | None]:
    """(the highest-load point meeting the SLO, the lowest-J/token point meeting it)."""
    meeting = [p for p in points if p.good_share is not None and p.good_share >= SLO_SHARE]
    meeting = [p for p in meeting if not p.saturated]
    if not meeting:
        return None, None
    cheapest = [p for p in meeting if p.j_per_token is not None]
    best = min(cheapest, key=lambda p: p.j_per_token or 0.0) if cheapest else None
    return max(meeting, key=lambda p: p.x), best


def _plot(label: str, by_rate: bool, points: list[SweepPoint]) -> Plot:
    has_slo = any(p.good_share is not None for p in points)
    edge, best = slo_frontier(points)
    loads = [p for p in points if not (by_rate and p.point == 0)]
    probe = next((p for p in points if by_rate and p.point == 0), None)
    x_label = "offered request rate (req/s)" if by_rate else "concurrency (requests in flight)"
    with drawing(7.0, 2.8, 1, 2) as fig:
        left, right = fig.axes
        for ax, value, y_label in (
            (left, lambda p: p.j_per_token, "J per output token"),
            (right, (lambda p: None if p.good_share is None else 100 * p.good_share)
             if has_slo else (lambda p: p.output_tokens_per_s),
             "requests within the SLOs (%)" if has_slo else "output tokens/s"),
        ):  # fmt: skip
            shown = [(p.x, value(p), p) for p in loads if value(p) is not None]
            ax.plot([x for x, _, _ in shown], [y for _, y, _ in shown], marker="o",
                    markersize=4, linewidth=1, color="#1f77b4")  # fmt: skip
            for x, y, p in shown:
                if p.saturated:
                    ax.plot([x], [y], marker="x", markersize=8, color="#d62728")
            if probe is not None:
                ax.axvline(probe.x, color="#777", linestyle=":", linewidth=1)
                if value(probe) is not None:
                    ax.plot([probe.x], [value(probe)], marker="D", markersize=4, color="#777")
            if edge is not None:
                ax.axvline(edge.x, color="#2ca02c", linestyle="--", linewidth=1)
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            ax.set_ylim(bottom=0)
        if has_slo:
            right.axhline(100 * SLO_SHARE, color="#2ca02c", linestyle=":", linewidth=1)
        uri = svg_uri(fig)
    return Plot(
        title=f"Energy against load: {label}",
        uri=uri,
        alt=f"J per output token and {'goodput' if has_slo else 'throughput'} against "
        f"{'the request rate' if by_rate else 'the concurrency'} of a load sweep",
        caption=_caption(by_rate, has_slo, points, probe, edge, best),
    )


def _caption(
    by_rate: bool, has_slo: bool, points: Sequence[SweepPoint], probe: SweepPoint | None,
    edge: SweepPoint | None, best: SweepPoint | None,
) -> str:  # fmt: skip
    steady = "steady-state" if all(p.steady for p in points) else "steady-state where found, "
    steady += "" if all(p.steady for p in points) else "else whole-run"
    text = f"J per output token ({steady}; medians over ok cycles). "
    if probe is not None:
        text += (
            f"Dotted grey, with its figures as a grey diamond: the maximum throughput measured "
            f"first, every request in flight at once ({probe.x:.3g} req/s completed). "
        )
    if any(p.saturated for p in points):
        text += "Red ×: the queue grew all run (load_above_capacity); higher points not run. "
    if not has_slo:
        return text + "No SLO set (slo.ttft_ms, slo.tpot_ms): right, throughput."
    unit = "req/s" if by_rate else "in flight"
    if edge is None:
        return text + f"No point had {SLO_SHARE:.0%} of its requests within the SLOs."
    text += (
        f"Dashed green: the highest load with at least {SLO_SHARE:.0%} of requests within "
        f"the SLOs ({edge.x:.3g} {unit})."
    )
    if best is not None and best.j_per_token is not None:
        text += f" Lowest J/token meeting them: {best.j_per_token:.4g} J at {best.x:.3g} {unit}."
    return text
