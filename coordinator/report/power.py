"""The power-limit figure (``gpu.power_limit_w`` swept; issue 19): J/token, throughput and
time to first token against the limit, the Pareto front of J/token against throughput, and
the lowest-energy limit that meets the campaign's SLO.

Each point is an experiment's aggregate (mean J/token over ok cycles, median tok/s and
TTFT p50), one line per combination of the other swept axes. An experiment *meets the SLO*
when the median share of its requests within the SLOs is at least ``SLO_SHARE``
(frontier.py's rule); without SLOs, the lowest-energy limit is named without that test.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from lem.coordinator.report.frontier import SLO_SHARE
from lem.coordinator.report.gather import CampaignData
from lem.coordinator.report.plots import Plot, drawing, label_of, svg_uri
from lem.coordinator.report.rows import ExperimentRow, pareto_front

AXIS = "gpu.power_limit_w"


def _good_shares(data: CampaignData) -> dict[str, float]:
    """Median share of requests within the SLOs, per experiment id (where measured)."""
    shares: dict[str, list[float]] = {}
    for cycle in data.cycles:
        m = cycle.measurement
        if m is not None and m.latency.goodput and m.latency.goodput.good_share is not None:
            shares.setdefault(cycle.experiment_id, []).append(m.latency.goodput.good_share)
    return {e: statistics.median(v) for e, v in shares.items()}


def best_limit(
    data: CampaignData, rows: Sequence[ExperimentRow]
) -> tuple[ExperimentRow, float, bool] | None:
    """(the lowest-J/token experiment meeting the SLO, its power limit (W), whether an SLO
    was judged), or None when no experiment with a limit has J/token."""
    config = {e.id: e.config for e in data.experiments}
    shares = _good_shares(data)
    judged = bool(shares)
    candidates = [
        r for r in rows
        if isinstance(config[r.experiment_id].get(AXIS), int | float)
        and r.mean_energy_per_output_token_j is not None
        and (not judged or shares.get(r.experiment_id, 0.0) >= SLO_SHARE)
    ]  # fmt: skip
    if not candidates:
        return None
    best = min(candidates, key=lambda r: r.mean_energy_per_output_token_j or 0.0)
    return best, float(config[best.experiment_id][AXIS]), judged


def power_plots(data: CampaignData, rows: Sequence[ExperimentRow]) -> list[Plot]:
    """The figure, when the campaign sweeps the power limit."""
    if AXIS not in data.axes or not any(r.mean_energy_per_output_token_j for r in rows):
        return []
    config = {e.id: e.config for e in data.experiments}
    others = [a for a in data.axes if a != AXIS]
    series: dict[str, list[tuple[float, ExperimentRow]]] = {}
    for row in rows:
        limit = config[row.experiment_id].get(AXIS)
        if not isinstance(limit, int | float):
            continue
        key = ", ".join(f"{o}={label_of(config[row.experiment_id].get(o))}" for o in others)
        series.setdefault(key, []).append((float(limit), row))
    front = {id(r) for r in pareto_front(
        rows, lambda r: r.median_output_tokens_per_s, lambda r: r.mean_energy_per_output_token_j,
        maximise_x=True,
    )}  # fmt: skip
    panels: list[tuple[str, Callable[[ExperimentRow], float | None]]] = [
        ("J per output token", lambda r: r.mean_energy_per_output_token_j),
        ("output tokens/s", lambda r: r.median_output_tokens_per_s),
        ("TTFT p50 (ms)", lambda r: r.median_ttft_p50_ms),
    ]
    best = best_limit(data, rows)
    with drawing(9.0, 2.8, 1, 3) as fig:
        for ax, (label, value) in zip(fig.axes, panels, strict=True):
            for key, points in sorted(series.items()):
                shown = [(x, value(r), r) for x, r in sorted(points, key=lambda p: p[0])]
                shown = [(x, y, r) for x, y, r in shown if y is not None]
                if not shown:
                    continue
                ax.plot([x for x, _, _ in shown], [y for _, y, _ in shown], marker="o",
                        markersize=4, linewidth=1, label=key or None)  # fmt: skip
                on_front = [(x, y) for x, y, r in shown if id(r) in front]
                ring = {"marker": "o", "markersize": 8, "markerfacecolor": "none"}
                ax.plot([x for x, _ in on_front], [y for _, y in on_front], linestyle="none",
                        color="#2ca02c", **ring)  # fmt: skip
            if best is not None:
                ax.axvline(best[1], color="#2ca02c", linestyle="--", linewidth=1)
            ax.set_xlabel("power limit (W)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            if len(series) > 1:
                ax.legend(fontsize=6)
        uri = svg_uri(fig)
    return [Plot(title="Energy, throughput and latency against the power limit", uri=uri,
                 alt="J per output token, output tokens/s and TTFT p50 against the GPU power "
                 "limit", caption=_caption(best))]  # fmt: skip


def _caption(best: tuple[ExperimentRow, float, bool] | None) -> str:
    text = (
        "Mean J per output token (gross), median output tokens/s and median TTFT p50 over ok "
        "cycles against gpu.power_limit_w. Green rings: the Pareto front of J/token against "
        "throughput. "
    )
    if best is None:
        return text + f"No experiment had {SLO_SHARE:.0%} of its requests within the SLOs."
    row, limit, judged = best
    meets = f"meeting the SLOs ({SLO_SHARE:.0%} of requests within them)" if judged else (
        "(no SLO set: slo.ttft_ms, slo.tpot_ms)"
    )  # fmt: skip
    return text + (
        f"Dashed green: the lowest-energy limit {meets}: {limit:g} W, "
        f"{row.mean_energy_per_output_token_j:.4g} J/token ({row.name or row.experiment_id})."
    )
