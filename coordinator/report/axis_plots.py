"""Figures against each swept axis: one line per combination of the other axes (every
experiment shown), or, for a sampled campaign, the spread over the other axes at each
value of the axis (median, interquartile range, min–max)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lem.coordinator.report.gather import CampaignData
from lem.coordinator.report.plots import Plot, all_numeric, drawing, label_of, svg_uri
from lem.coordinator.report.rows import ExperimentRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# A numeric axis with more values than this gets matplotlib's ticks, not one per value.
MAX_TICKS = 16
# Fixed margins (fractions of the figure) of the spread figures: room for the tick labels
# and the long y labels, without matplotlib's layout pass.
SPREAD_MARGINS = {"left": 0.085, "right": 0.985, "bottom": 0.16, "top": 0.96, "wspace": 0.3}


def axis_plots(data: CampaignData, rows: Sequence[ExperimentRow]) -> list[Plot]:
    """For each swept axis: mean J/token (gross, and net of idle) with 95% CI bars, one
    series per combination of the other axes; for a sampled campaign (``data.sample``),
    J/token and throughput aggregated over the other axes instead (``_spread_plot``)."""
    plots = []
    for axis in data.axes:
        if any(r.mean_energy_per_output_token_j is not None for r in rows):
            draw = _axis_plot if data.sample is None else _spread_plot
            plots.append(draw(data, rows, axis))
    return plots


def _axis_plot(data: CampaignData, rows: Sequence[ExperimentRow], axis: str) -> Plot:
    others = [a for a in data.axes if a != axis]
    config = {e.id: e.config for e in data.experiments}
    values: list[Any] = [config[r.experiment_id].get(axis) for r in rows]
    numeric = all_numeric(values)
    categories = sorted({label_of(v) for v in values})
    series: dict[str, list[tuple[float, ExperimentRow]]] = {}
    for row, value in zip(rows, values, strict=True):
        key = ", ".join(f"{o}={label_of(config[row.experiment_id].get(o))}" for o in others)
        x = float(value) if numeric else float(categories.index(label_of(value)))
        series.setdefault(key, []).append((x, row))
    panels: list[tuple[str, Callable[[ExperimentRow], float | None], Callable[..., Any]]] = [
        ("gross", lambda r: r.mean_energy_per_output_token_j,
         lambda r: r.ci95_energy_per_output_token_j),
        ("net of idle", lambda r: r.mean_net_energy_per_output_token_j,
         lambda r: r.ci95_net_energy_per_output_token_j),
    ]  # fmt: skip
    with drawing(7.0, 2.8, 1, 2) as fig:
        for ax, (kind, mean, ci) in zip(fig.axes, panels, strict=True):
            for key, points in sorted(series.items()):
                points = [
                    (x, r) for x, r in sorted(points, key=lambda p: p[0]) if mean(r) is not None
                ]
                if not points:
                    continue
                ax.errorbar(
                    [x for x, _ in points],
                    [mean(r) for _, r in points],
                    yerr=[ci(r) or 0.0 for _, r in points],
                    marker="o", markersize=4, capsize=3, linewidth=1, label=key or None,
                )  # fmt: skip
            _axis_scale(ax, values, numeric, categories)
            ax.set_xlabel(axis)
            ax.set_ylabel(f"J per output token ({kind})")
            ax.set_ylim(bottom=0)
            if len(series) > 1:
                ax.legend(fontsize=6)
        uri = svg_uri(fig)
    return Plot(
        title=f"J/token against {axis}",
        uri=uri,
        alt=f"Mean energy per output token, gross and net, against {axis}, with 95% CI bars",
        caption=f"Mean J per output token over ok cycles against {axis}; bars: 95% CI of the "
        "mean (Student's t; none with one cycle). Left: gross (idle draw included); right: "
        "net of the idle baseline."
        + (f" One line per value of {', '.join(others)}." if others else ""),
    )


def _spread_plot(data: CampaignData, rows: Sequence[ExperimentRow], axis: str) -> Plot:
    """Mean J/token and median throughput of every experiment against ``axis``: at each of
    its values, the median over the experiments there (the other axes' points), their
    interquartile range and their min–max."""
    import numpy as np

    config = {e.id: e.config for e in data.experiments}
    values: list[Any] = [config[r.experiment_id].get(axis) for r in rows]
    numeric = all_numeric(values)
    if numeric:
        categories: list[str] = []
        xs = [float(v) for v in values]
    else:
        labels = [label_of(v) for v in values]
        categories = sorted(set(labels))
        index = {c: float(i) for i, c in enumerate(categories)}
        xs = [index[label] for label in labels]
    panels: list[tuple[str, Callable[[ExperimentRow], float | None]]] = [
        ("J per output token (gross, mean)", lambda r: r.mean_energy_per_output_token_j),
        ("output tokens/s (median)", lambda r: r.median_output_tokens_per_s),
    ]  # fmt: skip
    counts: set[int] = set()
    with drawing(7.0, 2.8, 1, 2, margins=SPREAD_MARGINS) as fig:
        for ax, (label, metric) in zip(fig.axes, panels, strict=True):
            groups: dict[float, list[float]] = {}
            for x, row in zip(xs, rows, strict=True):
                if (y := metric(row)) is not None:
                    groups.setdefault(x, []).append(y)
            if not groups:
                ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center",
                        va="center", color="#7f7f7f")  # fmt: skip
                continue
            at = sorted(groups)
            counts.update(len(groups[x]) for x in at)
            low, q1, median, q3, high = np.array(
                [np.percentile(groups[x], [0, 25, 50, 75, 100]) for x in at]
            ).T
            ax.fill_between(at, low, high, color="#1f77b4", alpha=0.15, linewidth=0,
                            label="min–max")  # fmt: skip
            ax.fill_between(at, q1, q3, color="#1f77b4", alpha=0.35, linewidth=0, label="IQR")
            ax.plot(at, median, "-o", color="#1f77b4", markersize=3, linewidth=1.2,
                    label="median")  # fmt: skip
            _axis_scale(ax, values, numeric, categories)
            ax.set_xlabel(axis)
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=6)
        uri = svg_uri(fig)
    others = [a for a in data.axes if a != axis]
    over = f"the {', '.join(others)} points" if others else "its experiments"
    per_value = (
        f"{min(counts):,}–{max(counts):,}" if counts and min(counts) != max(counts)
        else f"{next(iter(counts), 0):,}"
    )  # fmt: skip
    return Plot(
        title=f"J/token and throughput against {axis}",
        uri=uri,
        alt=f"Median, interquartile range and range of J per output token and of throughput "
        f"over the experiments at each value of {axis}",
        caption=f"At each value of {axis}, the spread over {over} ({per_value} experiments "
        "per value): line, the median; dark band, the interquartile range; light band, "
        "min–max. Left: mean J per output token over each experiment's ok cycles (gross); "
        "right: median output tokens/s over cycles.",
    )


def _axis_scale(ax: Axes, values: Sequence[Any], numeric: bool, categories: list[str]) -> None:
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
        return
    positive = [float(v) for v in values if float(v) > 0]
    if len(positive) == len(values) and max(positive) / min(positive) >= 8:
        ax.set_xscale("log", base=2)
    ticks = sorted(set(values))
    if len(ticks) > MAX_TICKS:
        return  # matplotlib's own ticks (only a sampled campaign's plot has so many)
    ax.set_xticks([float(v) for v in ticks], [label_of(v) for v in ticks])
    ax.minorticks_off()
