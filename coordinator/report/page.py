"""The report page: summary table, flags, figures and the reference sections, in one
self-contained HTML file (inline CSS, figures as data URIs, no script, no network)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lem.coordinator.report.axis_plots import axis_plots
from lem.coordinator.report.frontier import frontier_plots
from lem.coordinator.report.gather import (
    MAX_TIMELINES,
    CampaignData,
    ReportDataError,
    read_campaign,
)
from lem.coordinator.report.markup import esc, null
from lem.coordinator.report.plots import (
    MatplotlibMissing,
    Plot,
    latency_plot,
    pareto_plots,
    require_matplotlib,
    timeline_plots,
)
from lem.coordinator.report.power import power_plots
from lem.coordinator.report.sample import UnknownExperiment
from lem.coordinator.report.sections import config_section, environment_section, method_section
from lem.coordinator.report.tables import CSV_NAME, experiments_csv, flags_section, summary_section
from lem.coordinator.store.results_store import StoreError
from lem.protocol.errors import BadInput
from lem.protocol.version import lem_version

INDEX = "index.html"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 1.2em 3em;
color:#1b1b1b}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}
table.facts th{background:#f8f8f8;white-space:nowrap}
.null{color:#8a6d00}.flag{display:inline-block;background:#fde2e1;color:#a40000;
border-radius:3px;padding:0 4px;margin:1px;font-size:.85em;text-decoration:none}
.flagged{background:#fde2e1;color:#a40000;padding:0 3px}
.flagdef{border-left:4px solid #d62728;padding:.2em .8em;margin:.6em 0;background:#fff6f6}
.notes{font-size:.9em;color:#444}figure{margin:.8em 0}img{max-width:100%;height:auto}
figcaption{font-size:.88em;color:#444;max-width:60em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.6em}
.grid figure{margin:0}details{margin:.3em 0}summary{cursor:pointer}
pre{background:#f6f6f6;padding:.6em;overflow:auto}.muted{color:#666}
"""
# Added for a sampled campaign only (a small campaign's page stays as it was).
_SAMPLED_CSS = """.sampled{border-left:4px solid #1f77b4;padding:.3em .8em;background:#f3f8fd}
"""


class ReportError(BadInput):
    """No report can be written: unknown campaign, missing store or matplotlib, or an
    output folder that cannot be written. One line, fit for the command line."""


def _figure(plot: Plot) -> str:
    return (
        f'<figure><img src="{plot.uri}" alt="{esc(plot.alt)}" title="{esc(plot.title)}">'
        f"<figcaption><b>{esc(plot.title)}.</b> {esc(plot.caption)}</figcaption></figure>"
    )


def _reasons(values: list[str | None], fallback: str) -> str:
    distinct = sorted({v for v in values if v})
    return "; ".join(distinct) if distinct else fallback


def figures_sections(data: CampaignData) -> list[tuple[str, str, str]]:
    """(anchor, title, HTML) of each figure section, with the reason when one is empty."""
    rows = data.rows
    ok = [c.measurement for c in data.cycles if c.measurement is not None]
    energy_reasons = [m.energy.energy_unavailable_reason for m in ok]
    no_energy = null(_reasons(energy_reasons, "no ok measurement"))
    axes = axis_plots(data, rows)
    if axes:
        axes_html = "".join(_figure(p) for p in axes)
    elif not data.axes:
        axes_html = "<p>No swept axis: the campaign's experiments share one config.</p>"
    else:
        axes_html = f"<p>No J/token to plot: {no_energy}</p>"
    fronts = pareto_plots(rows, data.sample)
    pareto_html = "".join(_figure(p) for p in fronts) or f"<p>No J/token to plot: {no_energy}</p>"
    timelines, with_telemetry = timeline_plots(data)
    if timelines:
        shown = (
            f"<p class='muted'>Showing the first {MAX_TIMELINES} of {with_telemetry} "
            "measurements with telemetry.</p>"
            if with_telemetry > len(timelines)
            else ""
        )
        if data.sample is not None:
            shown = (
                f"<p class='muted'>Measurements of the experiments shown one by one (named, "
                f"then the Pareto fronts, then flagged): {len(timelines)} of their "
                f"{with_telemetry:,} with telemetry.</p>"
            )
        timeline_html = shown + '<div class="grid">' + "".join(map(_figure, timelines)) + "</div>"
    elif data.sample is not None and any(m.has_samples for m in ok):
        timeline_html = "<p>No telemetry in the experiments shown one by one.</p>"
    else:
        observed = [m.observed.telemetry_unavailable_reason for m in ok]
        why = _reasons(observed, "no samples in any window")
        timeline_html = f"<p>No telemetry: {null(why)}</p>"
    latency = latency_plot(data)
    latency_reasons = [m.latency.latency_unavailable_reason for m in ok]
    latency_html = (
        _figure(latency)
        if latency
        else "<p>No request latencies in the experiments shown one by one.</p>"
        if data.sample is not None and any(m.latency.latency_unavailable_reason is None for m in ok)
        else f"<p>No request latencies: "
        f"{null(_reasons(latency_reasons, 'token times not recorded'))}"
        "</p>"
    )
    sections = [
        ("axes", "J/token against each swept axis", axes_html),
        ("pareto", "Pareto fronts", pareto_html),
        ("timelines", "Power and temperature per measurement", timeline_html),
        ("latency", "Latency distributions", latency_html),
    ]
    load = frontier_plots(data)  # only a campaign with a load sweep has the section
    if load:
        sections.insert(2, ("load", "Energy against load", "".join(_figure(p) for p in load)))
    power = power_plots(data, rows)  # only one that sweeps the power limit
    if power:
        title = "Energy against the power limit"
        sections.insert(2, ("power", title, "".join(_figure(p) for p in power)))
    return sections


def render(data: CampaignData) -> str:
    """The whole page."""
    c = data.campaign
    sections = [
        ("summary", "Summary", summary_section(data)),
        ("flags", "Flags", flags_section(data)),
        *figures_sections(data),
        ("environment", "Environment", environment_section(data)),
        ("config", "Effective config and provenance", config_section(data)),
        ("method", "Method", method_section(data)),
    ]
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(c.created_at_unix_s))
    css = _CSS if data.sample is None else _CSS + _SAMPLED_CSS
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lem report: {esc(c.name)} ({esc(c.id)})</title><style>{css}</style></head>"
        f"<body><h1>lem report: {esc(c.name)}</h1>"
        f'<p class="muted">Campaign <code>{esc(c.id)}</code>, {esc(c.status)}, created '
        f"{esc(created)}; {esc(c.measurements_ok)} ok and {esc(c.measurements_failed)} failed "
        f"cycles. Report made {esc(made)} by lem {esc(lem_version())}.</p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def _write(out: Path, name: str, text: str) -> None:
    """``out/name`` whole or not at all (a temporary file renamed into place)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=out)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report here: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / name)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ReportError(f"{out}: cannot write the report: {exc.strerror or exc}") from exc
        raise


def write_report(
    store_path: str | Path,
    campaign_id: str,
    out_dir: str | Path,
    experiments: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/index.html`` for one campaign (``experiments``: ids, names or
    positions to show whatever the sample), and, for a campaign above the sample
    threshold, ``out_dir/experiments.csv`` of every experiment; the page's path. Each file
    appears whole or not at all. ``ReportError`` on any problem."""
    try:
        require_matplotlib()
        data = read_campaign(store_path, campaign_id, experiments)
    except (MatplotlibMissing, ReportDataError, StoreError, UnknownExperiment) as exc:
        raise ReportError(str(exc)) from exc
    page = render(data)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report here: {exc.strerror or exc}") from exc
    if data.sample is not None:
        _write(out, CSV_NAME, experiments_csv(data))
    _write(out, INDEX, page)
    return out / INDEX
