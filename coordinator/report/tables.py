"""The report's tables: the summary of the experiments (for a sampled campaign, a bounded
table, what was left out and the CSV of every experiment written beside the page) and the
flags."""

from __future__ import annotations

import csv
import io
from typing import Any

from lem.coordinator.report.gather import CampaignData
from lem.coordinator.report.markup import Notes, esc, flag_badges, flag_meaning, number, table
from lem.coordinator.report.plots import label_of
from lem.coordinator.report.sample import BEST_WORST

CSV_NAME = "experiments.csv"
MAX_MARKS = 12  # per flag, in a sampled campaign's flags section
MAX_FAILED = 50  # failed cycles listed in a sampled campaign's flags section


def _mean_ci(mean_j: float | None, ci_j: float | None, flags: list[str]) -> str | None:
    if mean_j is None:
        return None
    text = esc(number(mean_j, 4)) + ("" if ci_j is None else f" ± {esc(number(ci_j, 2))}")
    return f'<span class="flagged">{text}</span>' if flags else text


def summary_section(data: CampaignData) -> str:
    """One row per experiment (for a sampled campaign, per experiment of its table, with
    why it is there): J/token ± CI, CV, net J/token, throughput, power, flags."""
    notes = Notes("summary")
    config = {e.id: e.config for e in data.experiments}
    sample = data.sample
    rows = data.rows
    if sample is not None:
        in_table = set(sample.table)
        rows = [r for r in rows if r.experiment_id in in_table]
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
                *([] if sample is None else [esc(", ".join(sample.why[r.experiment_id]))]),
            ]
        )
    header = ["#", "experiment", *data.axes, "cycles ok / failed", "J/token gross (mean ± CI95)",
              "CV", "J/token net (mean ± CI95)", "tok/s", "power W", "bound", "TTFT p50 ms",
              "ITL p50 ms", "flags", *([] if sample is None else ["shown because"])]  # fmt: skip
    caption = (
        "<p class='muted'>J/token: GPU energy per output token, mean over ok cycles ± the "
        "95% CI half-width (Student's t). CV: of J/token over cycles. Net: idle baseline "
        "subtracted. tok/s, power, TTFT and ITL: medians over cycles. Bound: worst "
        "counter-quantisation bound. A red figure carries a flag (see Flags).</p>"
    )
    lead = "" if sample is None else sample_note(data)
    return lead + table(header, body, "summary") + caption + notes.render()


def flags_section(data: CampaignData) -> str:
    """Every flag with its meaning and the figures it marks; failed cycles with reasons.
    For a sampled campaign, the first ``MAX_MARKS`` marks of each flag and the first
    ``MAX_FAILED`` failed cycles, with how many more there are."""
    rows = data.rows
    cap = data.sample is not None
    marked: dict[str, list[str]] = {}
    experiments: dict[str, set[str]] = {}  # flag → the experiments it marks
    for c in data.cycles:
        for f in c.measurement.flags if c.measurement else []:
            name = data.experiment(c.experiment_id).name or c.experiment_id
            marked.setdefault(f, []).append(f"#{c.position} {name}, cycle {c.cycle}")
            experiments.setdefault(f, set()).add(c.experiment_id)
    for r in rows:
        if r.high_cv:
            marked.setdefault("high_cv", []).append(f"#{r.position} {r.name or r.experiment_id}")
    parts = [
        f'<div class="flagdef" id="flag-{esc(f)}"><b>{esc(f)}</b>: {esc(flag_meaning(f))}.'
        f"<br><small>Marks: {esc(_marks(where, cap, len(experiments.get(f, ()))))}</small></div>"
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
        parts.append(
            table(["#", "experiment", "cycle", "reason"], failed[:MAX_FAILED] if cap else failed)
        )
        if cap and len(failed) > MAX_FAILED:
            parts.append(
                f"<p class='muted'>The first {MAX_FAILED} of {len(failed):,} failed cycles; "
                f"all of them: <code>lem results show {esc(data.campaign.id)} --where ...</code>"
                " or the failure columns of <code>lem results export</code>.</p>"
            )
    return "".join(parts)


def _marks(where: list[str], cap: bool, experiments: int) -> str:
    """The figures a flag marks; in a sampled campaign, the first ``MAX_MARKS`` of them."""
    if not cap or len(where) <= MAX_MARKS:
        return "; ".join(where)
    of = f" ({experiments:,} experiments)" if experiments else ""
    return (
        "; ".join(where[:MAX_MARKS])
        + f"; and {len(where) - MAX_MARKS:,} more, of {len(where):,} in all{of}"
    )


def sample_note(data: CampaignData) -> str:
    """What a sampled page shows of the campaign, what it leaves out and where the rest is."""
    sample = data.sample
    assert sample is not None
    campaign = esc(data.campaign.id)
    reasons = [r for why in sample.why.values() for r in why]
    parts = []
    if named := reasons.count("named"):
        parts.append(f"{named} named with <code>--experiment</code>")
    for what, total in sample.fronts.items():
        shown = reasons.count(f"Pareto: {what}")
        on = (
            "the one experiment" if total == 1
            else f"all {total}" if shown == total
            else f"{shown} of the {total:,}, evenly along it,"
        )  # fmt: skip
        parts.append(f"{on} on the {esc(what)} Pareto front")
    if sample.flagged_total:
        flagged = reasons.count("flagged")
        parts.append(
            f"all {flagged} flagged" if flagged == sample.flagged_total
            else f"the first {flagged} of {sample.flagged_total:,} flagged"
        )  # fmt: skip
    parts.append(f"the {BEST_WORST} lowest and {BEST_WORST} highest mean J/token")
    return (
        f"<p class='sampled'>This campaign has <b>{sample.total:,}</b> experiments. The per-axis "
        "plots and the Pareto fronts place every one of them; the summary table shows "
        f"<b>{len(sample.table):,}</b>: {'; '.join(parts)}. Their configs are below; the "
        "timelines and latency curves are of the named, Pareto and flagged ones (the first "
        "of them, as each section says). "
        f"<b>{sample.left_out:,} experiments are left out</b> of the tables. Every experiment "
        f'is in <a href="{CSV_NAME}">{CSV_NAME}</a> beside this page; see them with '
        f"<code>lem results show {campaign} --where ...</code>, or add any to this page with "
        f"<code>lem report {campaign} --experiment NAME_OR_POSITION</code> (repeatable).</p>"
    )


CSV_FIELDS = (
    "cycles_ok", "cycles_failed", "mean_energy_per_output_token_j",
    "ci95_energy_per_output_token_j", "cv_energy_per_output_token",
    "mean_net_energy_per_output_token_j", "ci95_net_energy_per_output_token_j",
    "median_output_tokens_per_s", "median_avg_power_w", "median_ttft_p50_ms",
    "median_itl_p50_ms", "max_energy_relative_bound",
)  # fmt: skip


def experiments_csv(data: CampaignData) -> str:
    """One line per experiment, in plan order: identity, swept axes, the summary's figures
    (full precision; empty: not measured), flags, and why the page shows it (empty: left
    out)."""
    config = {e.id: e.config for e in data.experiments}
    why = {} if data.sample is None else data.sample.why
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["position", "experiment_id", "experiment_name", *data.axes, *CSV_FIELDS,
                     "flags", "shown_because"])  # fmt: skip

    def cell(value: Any) -> Any:
        """As JSON writes it (``true``, ``[1, 2]``), empty for null; numbers as they are."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return value
        return label_of(value)

    for r in data.rows:
        axes = [cell(config[r.experiment_id].get(a)) for a in data.axes]
        writer.writerow([
            r.position, r.experiment_id, cell(r.name), *axes,
            *(cell(getattr(r, f)) for f in CSV_FIELDS),
            ";".join(r.all_flags), ";".join(why.get(r.experiment_id, [])),
        ])  # fmt: skip
    return out.getvalue()
