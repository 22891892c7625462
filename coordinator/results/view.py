"""Rich rendering of stored results (``lem results``).

Every string read from a store reaches rich as ``Text`` with its control characters
escaped (``shown``): never as markup (``[/bold]`` in a name would break the table) nor raw
(an escape sequence would act on the terminal).

Headers carry units. A quantity that was not measured shows as ``null [n]``, and note
``[n]`` under the table gives the reason the worker gave — never 0. ``-`` means there is no
ok measurement to summarise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from lem.coordinator.store.schema import CampaignDetail, CampaignSummary, ExperimentSummary
from lem.protocol.bounds import printable

_STATUS_STYLE = {
    "running": "yellow",
    "finished": "green",
    "failed": "red",
    "interrupted": "magenta",
}
NO_DATA = "-"


def shown(text: str, style: str = "") -> Text:
    """A stored string as a table cell: escaped, never read as markup."""
    return Text(printable(text), style=style)


def _time(unix_s: float | None) -> str:
    if unix_s is None:
        return NO_DATA
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_s))


def _number(value: float | None, ok: int) -> str:
    """A median over ``ok`` measurements: ``-`` without any, ``null`` when unmeasured."""
    if ok == 0:
        return NO_DATA
    return "null" if value is None else f"{value:,.1f}"


class Notes:
    """Numbered reasons shown once under a table, so cells stay narrow."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def mark(self, reason: str, kind: str = "null because") -> str:
        number = self._numbers.setdefault(f"{kind}: {reason}", len(self._numbers) + 1)
        return f"[{number}]"

    def render(self) -> Text:
        text = Text()
        for line, number in self._numbers.items():
            text.append(f"[{number}] ", style="yellow")
            text.append(f"{printable(line)}\n")
        text.rstrip()
        return text


def format_energy_per_token(
    median_j: float | None, with_energy: int, ok: int, reasons: Sequence[str], notes: Notes
) -> Text:
    """``0.123`` (J per output token), or ``null [n]`` when no ok measurement has energy
    (``notes`` gets the reason). When only some ok measurements have energy, the count is
    shown: ``0.123 (3/5)``.
    """
    if ok == 0:
        return Text(NO_DATA, style="dim")
    if median_j is None:
        why = "; ".join(reasons) if reasons else "reason not recorded"
        return Text(f"null {notes.mark(why)}", style="yellow")
    text = f"{median_j:.3g}"
    if with_energy < ok:
        text += f" ({with_energy}/{ok})"
    return Text(text)


FLAG_MEANINGS = {
    "net_energy_clamped": "the idle baseline exceeded the load's power: net energy set to 0",
    "idle_baseline_unstable": "idle power never settled below the CV threshold",
    "contaminated": "another process computed on a measured GPU: its energy is counted in",
    "processes_unknown": "the GPU's compute processes could not be listed",
    "mig_parent_energy": "MIG slice: the energy counter is the whole parent GPU's",
    "thermal_throttle": "the GPU slowed its clocks for heat during the window",
    "power_brake": "the GPU's hardware power brake engaged during the window",
    "power_capped": "the GPU held its clocks back at its power limit during the window",
    "counter_power_mismatch": "energy counter and integrated power differ by more than 5%",
    "power_integration": "the energy counter failed: energy is integrated power samples",
    "cooldown_timeout": "the GPUs did not cool to cooldown.max_temperature_c in time",
    "warmup_not_converged": "warmup stopped at its limit before batch times converged",
    "short_window": "the counter-quantisation bound exceeds 1% of the energy: lengthen the window",
    "counter_period_unknown": "the energy counter's update period is unknown: no error bound",
    "load_above_capacity": "server arrivals outran the engine: the queue grew all run, so "
    "TTFT and e2e measure the backlog; lower the rate",
}


def _bound(relative: float | None, flags: Sequence[str], notes: Notes) -> Text:
    """Worst quantisation bound as ± percent of the energy, with notes for any flags."""
    marks = " ".join(notes.mark(FLAG_MEANINGS.get(f, f), f"flag {f}") for f in flags)
    shown = NO_DATA if relative is None else f"±{relative * 100:.2g}%"
    return Text(f"{shown} {marks}".strip(), style="red" if flags else "")


def _ci(half_width_j: float | None, mean_j: float | None) -> Text:
    """The 95% CI half-width of mean J/token over cycles, as ± percent of the mean."""
    if half_width_j is None or not mean_j:
        return Text(NO_DATA, style="dim")
    return Text(f"±{half_width_j / mean_j * 100:.2g}%")


HIGH_CV = 0.05  # J/token CV over cycles above this is flagged in the summary
HIGH_CV_MEANING = (
    f"J/token varies by more than {HIGH_CV:.0%} between cycles: warm up longer, lengthen "
    "windows or look for interference before publishing"
)


def _cv(cv: float | None, notes: Notes) -> Text:
    """CV of J/token over ok cycles in percent; red with a note above ``HIGH_CV``."""
    if cv is None:
        return Text(NO_DATA, style="dim")
    if cv <= HIGH_CV:
        return Text(f"{cv * 100:.2g}%")
    mark = notes.mark(HIGH_CV_MEANING, "flag high_cv")
    return Text(f"{cv * 100:.2g}% {mark}", style="red")


def _net(net_j: float | None, gross_j: float | None) -> Text:
    """Median net J per output token; ``-`` when there is no gross figure to net."""
    if gross_j is None:
        return Text(NO_DATA, style="dim")
    return Text("null" if net_j is None else f"{net_j:.3g}")


def _pair_ms(p50_ms: float | None, p99_ms: float | None, ok: int) -> Text:
    """``p50/p99`` in ms (medians over ok cycles); ``-`` without ok cycles or latency."""
    if ok == 0 or p50_ms is None or p99_ms is None:
        return Text(NO_DATA, style="dim")
    return Text(f"{p50_ms:.3g}/{p99_ms:.3g}")


def _share(share: float | None) -> Text:
    """A goodput share as a percentage; ``-`` when there is none."""
    return Text(NO_DATA, style="dim") if share is None else Text(f"{share * 100:.0f}%")


def _status(status: str) -> Text:
    return shown(status, style=_STATUS_STYLE.get(status, ""))


def _failed(count: int, reasons: Sequence[str] = (), notes: Notes | None = None) -> Text:
    marks = " ".join(notes.mark(r, "failed") for r in reasons) if notes else ""
    return Text(f"{count} {marks}".strip(), style="red" if count else "")


def render_campaign_list(summaries: Sequence[CampaignSummary]) -> list[RenderableType]:
    """One row per campaign (counts, medians over its ok measurements), then the notes."""
    notes = Notes()
    table = Table(title="lem campaigns (medians over ok cycles)", title_justify="left")
    table.add_column("ID", no_wrap=True)
    table.add_column("Name", overflow="fold", min_width=8)
    table.add_column("Created", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Exps", justify="right", no_wrap=True)
    table.add_column("Cyc", justify="right", no_wrap=True)
    table.add_column("OK", justify="right", no_wrap=True)
    table.add_column("Fail", justify="right", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    table.add_column("J/tok", no_wrap=True)
    for s in summaries:
        table.add_row(
            shown(s.id),
            shown(s.name),
            _time(s.created_at_unix_s),
            _status(s.status),
            str(s.experiment_count),
            str(s.cycles),
            str(s.measurements_ok),
            _failed(s.measurements_failed),
            _number(s.median_output_tokens_per_s, s.measurements_ok),
            format_energy_per_token(
                s.median_energy_per_output_token_j,
                s.measurements_with_energy,
                s.measurements_ok,
                s.energy_unavailable_reasons,
                notes,
            ),
        )
    if not summaries:
        table.caption = "no campaigns recorded yet"
    return [table, notes.render()]


def _model(e: ExperimentSummary) -> str:
    source = e.model_source or "?"
    return f"{source}:{e.model_name}" if e.model_name else source


def render_campaign_detail(detail: CampaignDetail) -> list[RenderableType]:
    """A header with the campaign's facts, then one row per experiment in run order."""
    c = detail.campaign
    header = Text()
    facts = [
        ("Campaign", c.id),
        ("Name", c.name),
        ("Status", c.status),
        ("Source", c.source_path or NO_DATA),
        ("Created", _time(c.created_at_unix_s)),
        ("Finished", _time(c.finished_at_unix_s)),
        ("Experiments", str(c.experiment_count)),
        ("Cycles each", str(c.cycles)),
        ("Measurements", f"{c.measurements_ok} ok, {c.measurements_failed} failed"),
    ]
    for label, value in facts:
        header.append(f"{label + ':':<14}", style="bold")
        header.append(
            printable(value), style=_STATUS_STYLE.get(value, "") if label == "Status" else ""
        )
        header.append("\n")
    header.rstrip()

    notes = Notes()
    table = Table(title="experiments (medians over ok cycles)", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Name", overflow="fold", min_width=8)
    table.add_column("Model", overflow="fold", min_width=8)
    table.add_column("dtype", no_wrap=True)
    table.add_column("Batch", justify="right", no_wrap=True)
    table.add_column("In", justify="right", no_wrap=True)
    table.add_column("Out", justify="right", no_wrap=True)
    table.add_column("OK", justify="right", no_wrap=True)
    table.add_column("Fail", justify="right", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    table.add_column("J/tok", no_wrap=True)
    table.add_column("CI95", no_wrap=True)
    table.add_column("CV", no_wrap=True)
    table.add_column("net J/tok", no_wrap=True)
    table.add_column("bound", no_wrap=True)
    table.add_column("W", justify="right", no_wrap=True)
    table.add_column("TTFT ms", justify="right", no_wrap=True)
    table.add_column("ITL ms", justify="right", no_wrap=True)
    with_goodput = any(e.median_goodput_share is not None for e in detail.experiments)
    if with_goodput:
        table.add_column("good", justify="right", no_wrap=True)
    for e in detail.experiments:
        latency = [
            _pair_ms(e.median_ttft_p50_ms, e.median_ttft_p99_ms, e.cycles_ok),
            _pair_ms(e.median_itl_p50_ms, e.median_itl_p99_ms, e.cycles_ok),
        ]
        if with_goodput:
            latency.append(_share(e.median_goodput_share))
        table.add_row(
            str(e.position),
            shown(e.name or NO_DATA),
            shown(_model(e)),
            shown(e.dtype or NO_DATA),
            str(e.batch_size) if e.batch_size is not None else NO_DATA,
            str(e.input_tokens) if e.input_tokens is not None else NO_DATA,
            str(e.output_tokens) if e.output_tokens is not None else NO_DATA,
            str(e.cycles_ok),
            _failed(e.cycles_failed, e.failure_reasons, notes),
            _number(e.median_output_tokens_per_s, e.cycles_ok),
            format_energy_per_token(
                e.median_energy_per_output_token_j,
                e.measurements_with_energy,
                e.cycles_ok,
                e.energy_unavailable_reasons,
                notes,
            ),
            _ci(e.ci95_energy_per_output_token_j, e.mean_energy_per_output_token_j),
            _cv(e.cv_energy_per_output_token, notes),
            _net(e.median_net_energy_per_output_token_j, e.median_energy_per_output_token_j),
            _bound(e.max_energy_relative_bound, e.flags, notes),
            _number(e.median_avg_power_w, e.cycles_ok),
            *latency,
        )
    servers = [str(e.position) for e in detail.experiments if e.workload_mode == "server"]
    table.caption = (
        "J/tok: gross GPU energy per output token (NVML energy-counter difference per GPU; "
        "integrated power where flagged). CI95: of the mean over cycles. CV: of J/tok over "
        "cycles. net: idle baseline subtracted. bound: worst counter-quantisation bound. "
        "TTFT, ITL: time to first token and inter-token latency, p50/p99 per cycle (median "
        "over cycles)"
        + (". good: share of requests within the SLOs" if with_goodput else "")
        + (f". Server mode: # {', '.join(servers)}" if servers else "")
        + ". Method: lem docs methodology"
    )
    table.caption_justify = "left"
    return [header, table, notes.render()]
