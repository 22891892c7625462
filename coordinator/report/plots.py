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

from lem.coordinator.report.gather import (
    MAX_LATENCY_CURVES,
    CampaignData,
    CycleInfo,
    LatencySamples,
)
from lem.coordinator.report.rows import ExperimentRow, pareto_front
from lem.coordinator.report.sample import Sample
from lem.protocol.errors import BadInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lem.protocol.results import Measurement

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
# Fixed margins (fractions of the figure) of a sampled campaign's Pareto figure.
PARETO_MARGINS = {"left": 0.14, "right": 0.97, "bottom": 0.14, "top": 0.96}


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
def drawing(
    width_in: float,
    height_in: float,
    rows: int = 1,
    cols: int = 1,
    margins: dict[str, float] | None = None,
) -> Iterator[Any]:
    """A matplotlib Figure (no pyplot, no global backend) under the report's style, laid
    out by matplotlib's constrained layout, or with fixed ``margins`` (``subplots_adjust``
    arguments): a sampled campaign's figures, where laying out would take most of the
    report's time."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width_in, height_in), layout=None if margins else "constrained")
        fig.subplots(rows, cols, squeeze=False)
        if margins:
            fig.subplots_adjust(**margins)
        yield fig


def svg_uri(fig: Figure, dpi: float | None = None) -> str:
    """The figure as an SVG data URI (``dpi``: of any rasterized layer in it)."""
    buffer = io.BytesIO()
    if dpi is None:
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    else:
        fig.savefig(buffer, format="svg", metadata={"Date": None}, dpi=dpi)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def label_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def all_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


# ---- Pareto fronts ---------------------------------------------------------------


def pareto_plots(rows: Sequence[ExperimentRow], sample: Sample | None = None) -> list[Plot]:
    """Throughput against J/token, and p50 TTFT against J/token when latency exists; the
    experiments no other beats on both are highlighted and joined. With a ``sample``, every
    experiment is still placed, but only the front's sampled experiments are labelled."""
    plots = []
    energy = [r for r in rows if r.mean_energy_per_output_token_j is not None]
    if energy:
        plots.append(
            _pareto(energy, lambda r: r.median_output_tokens_per_s, "output tokens/s (median)",
                    True, "throughput", sample)
        )  # fmt: skip
    if any(r.median_ttft_p50_ms is not None for r in energy):
        plots.append(
            _pareto(energy, lambda r: r.median_ttft_p50_ms, "TTFT p50, ms (median over cycles)",
                    False, "time to first token", sample)
        )  # fmt: skip
    return plots


def _pareto(
    rows: Sequence[ExperimentRow],
    x: Callable[[ExperimentRow], float | None],
    x_label: str,
    maximise_x: bool,
    what: str,
    sample: Sample | None,
) -> Plot:
    def y(r: ExperimentRow) -> float | None:
        return r.mean_energy_per_output_token_j

    front = pareto_front(rows, x, y, maximise_x)
    shown = [r for r in rows if x(r) is not None]
    labelled = shown
    if sample is not None:  # thousands of points: one raster layer, labels on the front only
        labelled = [r for r in front if f"Pareto: {what}" in sample.why.get(r.experiment_id, [])]
    margins = None if sample is None else PARETO_MARGINS
    with drawing(5.0, 3.2, margins=margins) as fig:
        ax = fig.axes[0]
        ax.scatter([x(r) for r in shown], [y(r) for r in shown], s=18 if sample is None else 4,
                   color="#7f7f7f", label="experiment", rasterized=sample is not None)  # fmt: skip
        ax.plot([x(r) for r in front], [y(r) for r in front], "-o", color=_FRONT, markersize=6,
                linewidth=1.2, label="Pareto front")  # fmt: skip
        for r in labelled:
            ax.annotate(f"#{r.position}", (x(r), y(r)), textcoords="offset points",
                        xytext=(4, 3), fontsize=6)  # fmt: skip
        ax.set_xlabel(x_label)
        ax.set_ylabel("J per output token (gross, mean)")
        ax.legend(fontsize=6)
        uri = svg_uri(fig, dpi=None if sample is None else 150)
    better = "higher" if maximise_x else "lower"
    listed = ", ".join(f"#{r.position}" for r in (front if sample is None else labelled))
    if sample is not None and len(labelled) < len(front):
        listed = f"{len(front):,} experiments; labelled, evenly along it: {listed}"
    return Plot(
        title=f"Pareto front: {what} against J/token",
        uri=uri,
        alt=f"{what} against mean J per output token; Pareto-optimal experiments in red",
        caption=f"Each point an experiment (#position). Red: the Pareto front — no other "
        f"experiment has both {better} {what} and lower J/token. Front: " + listed + ".",
    )


# ---- telemetry timelines ---------------------------------------------------------


def timeline_plots(data: CampaignData) -> tuple[list[Plot], int]:
    """Power and temperature over each measurement ``data.timelines`` holds, one small
    figure each; also how many measurements of the shown experiments had telemetry."""
    return [_timeline(data, c, m) for c, m in data.timelines], data.with_telemetry


def _timeline(data: CampaignData, cycle: CycleInfo, measurement: Measurement) -> Plot:
    assert measurement.observed.telemetry is not None
    gpus = measurement.observed.telemetry.per_gpu
    name = data.experiment(cycle.experiment_id).name or cycle.experiment_id
    title = f"#{cycle.position} {name}, cycle {cycle.cycle}"
    with drawing(3.6, 3.0, 2, 1) as fig:
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
        uri = svg_uri(fig)
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
    with drawing(7.0, 2.8, 1, 2) as fig:
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
        uri = svg_uri(fig)
    thinned = any(
        len(s.ttft_ms) < s.ttft_total or len(s.itl_ms) < s.itl_total for s in data.latency
    )
    return Plot(
        title="Latency distributions",
        uri=uri,
        alt="Empirical CDFs of time to first token and inter-token latency per experiment",
        caption="Empirical CDF over every request (TTFT) and every gap between consecutive "
        "tokens (ITL) of each experiment's ok cycles."
        + (f" Long series thinned evenly to {data.latency[0].limit:,} values." if thinned else "")
        + (
            " One curve per experiment shown one by one (named, Pareto, flagged) that has "
            f"request latencies, at most {MAX_LATENCY_CURVES}."
            if data.sample is not None
            else ""
        ),
    )


def _name(data: CampaignData, samples: LatencySamples) -> str:
    e = data.experiment(samples.experiment_id)
    return f"#{e.position} {e.name or e.id}"


def _spread(latency: Sequence[LatencySamples], what: str) -> float:
    values = [v for s in latency for v in getattr(s, what) if v > 0]
    return max(values) / min(values) if values else 1.0
