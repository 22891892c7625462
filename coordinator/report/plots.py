"""The report's figures, drawn with matplotlib (imported here only, lazily: it is the
``report`` extra) and returned as self-contained SVG data URIs for ``<img src=...>``."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lem.coordinator.report.gather import CampaignData, CycleInfo, LatencySamples
from lem.coordinator.report.rows import ExperimentRow, pareto_front
from lem.protocol.errors import BadInput

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Small multiples of power and temperature: at most this many measurements are drawn.
MAX_TIMELINES = 24
_RC: Any = {  # matplotlib types rcParams keys as Literals
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "lem-report",  # stable ids: the same store gives the same file
    "font.size": 8.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_FRONT = "#d62728"


class MatplotlibMissing(BadInput):
    """matplotlib is not installed (it comes with lem's ``report`` extra)."""


@dataclass(frozen=True)
class Plot:
    """One figure: its title, an ``<img>`` source (``data:image/svg+xml;base64,...``), the
    alternative text, and a caption saying what it shows and how."""

    title: str
    uri: str
    alt: str
    caption: str


def require_matplotlib() -> None:
    """``MatplotlibMissing`` with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MatplotlibMissing(
            "lem report needs matplotlib: pip install 'lem[report]' (or matplotlib>=3.8)"
        ) from exc


@contextmanager
def _figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1) -> Iterator[Any]:
    """A matplotlib Figure (no pyplot, no global backend) under the report's style."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        fig.subplots(rows, cols, squeeze=False)
        yield fig


def _uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


# ---- J/token against each swept axis --------------------------------------------


def axis_plots(data: CampaignData, rows: Sequence[ExperimentRow]) -> list[Plot]:
    """For each swept axis: mean J/token (gross, and net of idle) with 95% CI bars, one
    series per combination of the other axes."""
    plots = []
    for axis in data.axes:
        if any(r.mean_energy_per_output_token_j is not None for r in rows):
            plots.append(_axis_plot(data, rows, axis))
    return plots


def _axis_plot(data: CampaignData, rows: Sequence[ExperimentRow], axis: str) -> Plot:
    others = [a for a in data.axes if a != axis]
    config = {e.id: e.config for e in data.experiments}
    values: list[Any] = [config[r.experiment_id].get(axis) for r in rows]
    numeric = _numeric(values)
    categories = sorted({_label(v) for v in values})
    series: dict[str, list[tuple[float, ExperimentRow]]] = {}
    for row, value in zip(rows, values, strict=True):
        key = ", ".join(f"{o}={_label(config[row.experiment_id].get(o))}" for o in others)
        x = float(value) if numeric else float(categories.index(_label(value)))
        series.setdefault(key, []).append((x, row))
    panels: list[tuple[str, Callable[[ExperimentRow], float | None], Callable[..., Any]]] = [
        ("gross", lambda r: r.mean_energy_per_output_token_j,
         lambda r: r.ci95_energy_per_output_token_j),
        ("net of idle", lambda r: r.mean_net_energy_per_output_token_j,
         lambda r: r.ci95_net_energy_per_output_token_j),
    ]  # fmt: skip
    with _figure(7.0, 2.8, 1, 2) as fig:
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
        uri = _uri(fig)
    return Plot(
        title=f"J/token against {axis}",
        uri=uri,
        alt=f"Mean energy per output token, gross and net, against {axis}, with 95% CI bars",
        caption=f"Mean J per output token over ok cycles against {axis}; bars: 95% CI of the "
        "mean (Student's t; none with one cycle). Left: gross (idle draw included); right: "
        "net of the idle baseline."
        + (f" One line per value of {', '.join(others)}." if others else ""),
    )


def _axis_scale(ax: Axes, values: Sequence[Any], numeric: bool, categories: list[str]) -> None:
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
        return
    positive = [float(v) for v in values if float(v) > 0]
    if len(positive) == len(values) and max(positive) / min(positive) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({float(v) for v in values}), [_label(v) for v in sorted(set(values))])
    ax.minorticks_off()


# ---- Pareto fronts ---------------------------------------------------------------


def pareto_plots(rows: Sequence[ExperimentRow]) -> list[Plot]:
    """Throughput against J/token, and p50 TTFT against J/token when latency exists; the
    experiments no other beats on both are highlighted and joined."""
    plots = []
    energy = [r for r in rows if r.mean_energy_per_output_token_j is not None]
    if energy:
        plots.append(
            _pareto(energy, lambda r: r.median_output_tokens_per_s, "output tokens/s (median)",
                    True, "throughput")
        )  # fmt: skip
    if any(r.median_ttft_p50_ms is not None for r in energy):
        plots.append(
            _pareto(energy, lambda r: r.median_ttft_p50_ms, "TTFT p50, ms (median over cycles)",
                    False, "time to first token")
        )  # fmt: skip
    return plots


def _pareto(
    rows: Sequence[ExperimentRow],
    x: Callable[[ExperimentRow], float | None],
    x_label: str,
    maximise_x: bool,
    what: str,
) -> Plot:
    def y(r: ExperimentRow) -> float | None:
        return r.mean_energy_per_output_token_j

    front = pareto_front(rows, x, y, maximise_x)
    shown = [r for r in rows if x(r) is not None]
    with _figure(5.0, 3.2) as fig:
        ax = fig.axes[0]
        ax.scatter([x(r) for r in shown], [y(r) for r in shown], s=18, color="#7f7f7f",
                   label="experiment")  # fmt: skip
        ax.plot([x(r) for r in front], [y(r) for r in front], "-o", color=_FRONT, markersize=6,
                linewidth=1.2, label="Pareto front")  # fmt: skip
        for r in shown:
            ax.annotate(f"#{r.position}", (x(r), y(r)), textcoords="offset points",
                        xytext=(4, 3), fontsize=6)  # fmt: skip
        ax.set_xlabel(x_label)
        ax.set_ylabel("J per output token (gross, mean)")
        ax.legend(fontsize=6)
        uri = _uri(fig)
    better = "higher" if maximise_x else "lower"
    return Plot(
        title=f"Pareto front: {what} against J/token",
        uri=uri,
        alt=f"{what} against mean J per output token; Pareto-optimal experiments in red",
        caption=f"Each point an experiment (#position). Red: the Pareto front — no other "
        f"experiment has both {better} {what} and lower J/token. Front: "
        + ", ".join(f"#{r.position}" for r in front)
        + ".",
    )


# ---- telemetry timelines ---------------------------------------------------------


def timeline_plots(data: CampaignData) -> tuple[list[Plot], int]:
    """Power and temperature over each ok measurement's window, one small figure each (at
    most ``MAX_TIMELINES``); also how many measurements had telemetry in all."""
    with_samples = [
        c for c in data.cycles
        if c.measurement is not None and c.measurement.observed.telemetry is not None
        and any(g.samples for g in c.measurement.observed.telemetry.per_gpu)
    ]  # fmt: skip
    return [_timeline(data, c) for c in with_samples[:MAX_TIMELINES]], len(with_samples)


def _timeline(data: CampaignData, cycle: CycleInfo) -> Plot:
    assert cycle.measurement is not None and cycle.measurement.observed.telemetry is not None
    gpus = cycle.measurement.observed.telemetry.per_gpu
    name = data.experiment(cycle.experiment_id).name or cycle.experiment_id
    title = f"#{cycle.position} {name}, cycle {cycle.cycle}"
    with _figure(3.6, 3.0, 2, 1) as fig:
        power_ax, temp_ax = fig.axes
        for g in gpus:
            label = g.gpu_uuid[:12]
            power_ax.plot(*_present(g.t_s, g.power_w), linewidth=1, label=label)
            temp_ax.plot(*_present(g.t_s, g.temperature_c), linewidth=1, label=label)
        for ax, unit, column in ((power_ax, "power, W", "power_w"),
                                 (temp_ax, "temperature, °C", "temperature_c")):  # fmt: skip
            ax.set_ylabel(unit)
            if not any(v is not None for g in gpus for v in getattr(g, column)):
                ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center",
                        va="center", color="#7f7f7f")  # fmt: skip
        from matplotlib.ticker import MaxNLocator

        temp_ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # NVML gives whole °C
        power_ax.set_title(title, fontsize=8)
        power_ax.tick_params(labelbottom=False)
        temp_ax.set_xlabel("s since the window began")
        if len(gpus) > 1:
            power_ax.legend(fontsize=6)
        uri = _uri(fig)
    return Plot(
        title=title,
        uri=uri,
        alt=f"Power and temperature samples over the measured window of {title}",
        caption="NVML samples every ~0.1 s by the worker's sidecar, cut to the window.",
    )


def _present(t_s: Sequence[float], values: Sequence[float | int | None]) -> tuple[list, list]:
    pairs = [(t, v) for t, v in zip(t_s, values, strict=True) if v is not None]
    return [t for t, _ in pairs], [v for _, v in pairs]


# ---- latency distributions -------------------------------------------------------


def latency_plot(data: CampaignData) -> Plot | None:
    """ECDFs of TTFT and inter-token latency, one line per experiment; None without any."""
    if not data.latency:
        return None
    with _figure(7.0, 2.8, 1, 2) as fig:
        for ax, what in zip(fig.axes, ("ttft_ms", "itl_ms"), strict=True):
            for samples in data.latency:
                values = sorted(getattr(samples, what))
                if not values:
                    continue
                shares = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, shares, where="post", linewidth=1, label=_name(data, samples))
            ax.set_xlabel("TTFT, ms" if what == "ttft_ms" else "inter-token latency, ms")
            ax.set_ylabel("share of requests" if what == "ttft_ms" else "share of gaps")
            ax.set_ylim(0, 1.02)
            if _spread(data.latency, what) >= 20:
                ax.set_xscale("log")
        fig.axes[0].legend(fontsize=6)
        uri = _uri(fig)
    thinned = any(
        len(s.ttft_ms) < s.ttft_total or len(s.itl_ms) < s.itl_total for s in data.latency
    )
    return Plot(
        title="Latency distributions",
        uri=uri,
        alt="Empirical CDFs of time to first token and inter-token latency per experiment",
        caption="Empirical CDF over every request (TTFT) and every gap between consecutive "
        "tokens (ITL) of each experiment's ok cycles."
        + (" Long series thinned evenly to 50,000 values." if thinned else ""),
    )


def _name(data: CampaignData, samples: LatencySamples) -> str:
    e = data.experiment(samples.experiment_id)
    return f"#{e.position} {e.name or e.id}"


def _spread(latency: Sequence[LatencySamples], what: str) -> float:
    values = [v for s in latency for v in getattr(s, what) if v > 0]
    return max(values) / min(values) if values else 1.0
