"""The report page: summary table, flags, figures and the reference sections, in one
self-contained HTML file (inline CSS, figures as data URIs, no script, no network)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from lem.coordinator.report.gather import CampaignData, ReportDataError, read_campaign
from lem.coordinator.report.markup import (
    Notes,
    esc,
    flag_badges,
    flag_meaning,
    null,
    number,
    table,
)
from lem.coordinator.report.plots import (
    MAX_TIMELINES,
    MatplotlibMissing,
    Plot,
    axis_plots,
    latency_plot,
    pareto_plots,
    require_matplotlib,
    timeline_plots,
)
from lem.coordinator.report.rows import ExperimentRow, experiment_table
from lem.coordinator.report.sections import config_section, environment_section, method_section
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


class ReportError(BadInput):
    """No report can be written: unknown campaign, missing store or matplotlib, or an
    output folder that cannot be written. One line, fit for the command line."""


def _mean_ci(mean_j: float | None, ci_j: float | None, flags: list[str]) -> str | None:
    if mean_j is None:
        return None
    text = esc(number(mean_j, 4)) + ("" if ci_j is None else f" ± {esc(number(ci_j, 2))}")
    return f'<span class="flagged">{text}</span>' if flags else text


def summary_section(data: CampaignData, rows: list[ExperimentRow]) -> str:
    """One row per experiment: J/token ± CI, CV, net J/token, throughput, power, flags."""
    notes = Notes("summary")
    config = {e.id: e.config for e in data.experiments}
    body = []
    for r in rows:
        flags = r.all_flags
        energy_why = "; ".join(r.energy_unavailable_reasons) or (
            "no ok cycle" if r.cycles_ok == 0 else None
        )
        net_why = "; ".join(r.net_energy_unavailable_reasons) or energy_why
        cv = r.cv_energy_per_output_token
        cv_text = None if cv is None else esc(f"{cv * 100:.2g}%")
        if cv_text is not None and r.high_cv:
            cv_text = f'<span class="flagged">{cv_text}</span>'
        bound = r.max_energy_relative_bound
        failed = " ".join(
            [esc(r.cycles_failed), *(notes.ref(f"failed: {f}") for f in r.failure_reasons)]
        )
        body.append(
            [
                esc(r.position),
                f'<a href="#config-{esc(r.experiment_id)}">{esc(r.name or r.experiment_id)}</a>',
                *(esc(config[r.experiment_id].get(a)) for a in data.axes),
                f"{esc(r.cycles_ok)} / {failed}",
                notes.cell(
                    _mean_ci(
                        r.mean_energy_per_output_token_j, r.ci95_energy_per_output_token_j, flags
                    ),
                    energy_why,
                ),
                notes.cell(cv_text, "fewer than two ok cycles with energy"),
                notes.cell(
                    _mean_ci(
                        r.mean_net_energy_per_output_token_j,
                        r.ci95_net_energy_per_output_token_j,
                        [],
                    ),
                    net_why,
                ),
                notes.cell(
                    esc(number(r.median_output_tokens_per_s)) if r.cycles_ok else None,
                    "no ok cycle",
                ),
                notes.cell(
                    esc(number(r.median_avg_power_w)) if r.median_avg_power_w else None, energy_why
                ),
                notes.cell(None if bound is None else esc(f"±{bound * 100:.2g}%"), energy_why),
                notes.cell(
                    esc(number(r.median_ttft_p50_ms)) if r.median_ttft_p50_ms else None,
                    "token times not recorded",
                ),
                notes.cell(
                    esc(number(r.median_itl_p50_ms)) if r.median_itl_p50_ms else None,
                    "token times not recorded",
                ),
                flag_badges(flags) or '<span class="muted">none</span>',
            ]
        )
    header = ["#", "experiment", *data.axes, "cycles ok / failed", "J/token gross (mean ± CI95)",
              "CV", "J/token net (mean ± CI95)", "tok/s", "power W", "bound", "TTFT p50 ms",
              "ITL p50 ms", "flags"]  # fmt: skip
    caption = (
        "<p class='muted'>J/token: GPU energy per output token, mean over ok cycles ± the "
        "95% CI half-width (Student's t). CV: of J/token over cycles. Net: idle baseline "
        "subtracted. tok/s, power, TTFT and ITL: medians over cycles. Bound: worst "
        "counter-quantisation bound. A red figure carries a flag (see Flags).</p>"
    )
    return table(header, body, "summary") + caption + notes.render()


def flags_section(data: CampaignData, rows: list[ExperimentRow]) -> str:
    """Every flag with its meaning and the figures it marks; failed cycles with reasons."""
    marked: dict[str, list[str]] = {}
    for c in data.cycles:
        for f in c.measurement.flags if c.measurement else []:
            name = data.experiment(c.experiment_id).name or c.experiment_id
            marked.setdefault(f, []).append(f"#{c.position} {name}, cycle {c.cycle}")
    for r in rows:
        if r.high_cv:
            marked.setdefault("high_cv", []).append(f"#{r.position} {r.name or r.experiment_id}")
    parts = [
        f'<div class="flagdef" id="flag-{esc(f)}"><b>{esc(f)}</b>: {esc(flag_meaning(f))}.'
        f"<br><small>Marks: {esc('; '.join(where))}</small></div>"
        for f, where in sorted(marked.items())
    ]
    if not parts:
        parts.append("<p>No figure of this campaign carries a flag.</p>")
    failed = [
        [esc(c.position), esc(c.experiment_id), esc(c.cycle), esc(c.failure_reason)]
        for c in data.cycles
        if c.status != "ok"
    ]
    if failed:
        parts.append("<h3>Failed cycles</h3>")
        parts.append(table(["#", "experiment", "cycle", "reason"], failed))
    return "".join(parts)


def _figure(plot: Plot) -> str:
    return (
        f'<figure><img src="{plot.uri}" alt="{esc(plot.alt)}" title="{esc(plot.title)}">'
        f"<figcaption><b>{esc(plot.title)}.</b> {esc(plot.caption)}</figcaption></figure>"
    )


def _reasons(values: list[str | None], fallback: str) -> str:
    distinct = sorted({v for v in values if v})
    return "; ".join(distinct) if distinct else fallback


def figures_sections(data: CampaignData, rows: list[ExperimentRow]) -> list[tuple[str, str, str]]:
    """(anchor, title, HTML) of each figure section, with the reason when one is empty."""
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
    fronts = pareto_plots(rows)
    pareto_html = "".join(_figure(p) for p in fronts) or f"<p>No J/token to plot: {no_energy}</p>"
    timelines, with_telemetry = timeline_plots(data)
    if timelines:
        shown = (
            f"<p class='muted'>Showing the first {MAX_TIMELINES} of {with_telemetry} "
            "measurements with telemetry.</p>"
            if with_telemetry > len(timelines)
            else ""
        )
        timeline_html = shown + '<div class="grid">' + "".join(map(_figure, timelines)) + "</div>"
    else:
        observed = [m.observed.telemetry_unavailable_reason for m in ok]
        why = _reasons(observed, "no samples in any window")
        timeline_html = f"<p>No telemetry: {null(why)}</p>"
    latency = latency_plot(data)
    latency_reasons = [m.latency.latency_unavailable_reason for m in ok]
    latency_html = (
        _figure(latency)
        if latency
        else f"<p>No request latencies: "
        f"{null(_reasons(latency_reasons, 'token times not recorded'))}"
        "</p>"
    )
    return [
        ("axes", "J/token against each swept axis", axes_html),
        ("pareto", "Pareto fronts", pareto_html),
        ("timelines", "Power and temperature per measurement", timeline_html),
        ("latency", "Latency distributions", latency_html),
    ]


def render(data: CampaignData, rows: list[ExperimentRow]) -> str:
    """The whole page."""
    c = data.campaign
    sections = [
        ("summary", "Summary", summary_section(data, rows)),
        ("flags", "Flags", flags_section(data, rows)),
        *figures_sections(data, rows),
        ("environment", "Environment", environment_section(data)),
        ("config", "Effective config and provenance", config_section(data)),
        ("method", "Method", method_section(data)),
    ]
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(c.created_at_unix_s))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lem report: {esc(c.name)} ({esc(c.id)})</title><style>{_CSS}</style></head>"
        f"<body><h1>lem report: {esc(c.name)}</h1>"
        f'<p class="muted">Campaign <code>{esc(c.id)}</code>, {esc(c.status)}, created '
        f"{esc(created)}; {esc(c.measurements_ok)} ok and {esc(c.measurements_failed)} failed "
        f"cycles. Report made {esc(made)} by lem {esc(lem_version())}.</p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(store_path: str | Path, campaign_id: str, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` for one campaign; its path. The file appears whole or
    not at all (a temporary file renamed into place). ``ReportError`` on any problem."""
    try:
        require_matplotlib()
        data = read_campaign(store_path, campaign_id)
        rows = experiment_table(store_path, data.campaign.id)
    except (MatplotlibMissing, ReportDataError, StoreError) as exc:
        raise ReportError(str(exc)) from exc
    page = render(data, rows)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".html.tmp", dir=out)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report here: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / INDEX)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ReportError(f"{out}: cannot write the report: {exc.strerror or exc}") from exc
        raise
    return out / INDEX
