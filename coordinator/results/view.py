"""Rich rendering of stored results (``lem results``).

Every string read from a store reaches rich as ``Text`` with its control characters
escaped (``shown``): never as markup (``[/bold]`` in a name would break the table) nor raw
(an escape sequence would act on the terminal).

Headers carry units. A quantity that was not measured shows as ``null [n]``, and note
``[n]`` under the table gives the reason the worker gave — never 0. ``-`` means there is no
ok measurement to summarise. A campaign that an unexpected error stopped shows the error
(stored in ``campaigns.error``) and how to resume it. On a narrow terminal the less
important columns are left out (and named under the table); ids and names are never cut
(fit.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from rich.console import RenderableType
from rich.text import Text

from lem.coordinator.results.fit import Column, FittedTable
from lem.coordinator.store.schema import CampaignDetail, CampaignSummary, ExperimentSummary
from lem.protocol.bounds import printable

_STATUS_STYLE = {
    "running": "yellow",
    "finished": "green",
    "failed": "red",
    "interrupted": "magenta",
}
NO_DATA = "-"


def plain(text: str) -> Text:
    """A name or id from a store as it is: not rich markup (``fp32[batch_size=1]`` keeps its
    brackets), control characters escaped."""
    return Text(printable(text))


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
    "no_steady_state": "server mode found no steady in-flight level long enough: the "
    "steady_* figures are null (steady_unavailable_reason), the whole-run ones stand",
    "output_length_not_enforced": "the server refused or did not honour ignore_eos/"
    "min_tokens: requests' output lengths are the server's, not the ones asked",
    "chunks_not_tokens": "the server streamed several tokens in one chunk: they share its "
    "stamp (zero inter-token gaps)",
    "usage_not_reported": "the server's streams had no usage report: output tokens are "
    "max_tokens (finish_reason length) or one per chunk, input tokens its tokenize count "
    "of the prompt text (chat: without the template)",
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


def _status(status: str, error: str | None = None, notes: Notes | None = None) -> Text:
    """The status; ``failed (error) [n]`` when an unexpected error stopped the campaign."""
    if error is None or notes is None:
        return Text(status, style=_STATUS_STYLE.get(status, ""))
    why = f"{printable(error)} (resumable: lem resume ID)"
    mark = notes.mark(why, "stopped by an unexpected error")
    return Text(f"{status} (error) {mark}", style=_STATUS_STYLE.get(status, ""))


class CampaignFacts(Protocol):
    """What a campaign's header shows (a ``CampaignSummary`` has it all)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def source_path(self) -> str | None: ...
    @property
    def created_at_unix_s(self) -> float: ...
    @property
    def finished_at_unix_s(self) -> float | None: ...
    @property
    def experiment_count(self) -> int: ...
    @property
    def cycles(self) -> int: ...
    @property
    def measurements_ok(self) -> int: ...
    @property
    def measurements_failed(self) -> int: ...
    @property
    def error(self) -> str | None: ...


def stopped_by_error(c: CampaignFacts) -> str | None:
    """The line ``lem results show`` prints under the header of a campaign an unexpected
    error stopped; None for any other."""
    if c.error is None:
        return None
    resume = f"lem resume {printable(c.id)}"
    return f"Stopped by an unexpected error: {printable(c.error)} (go on with: {resume})"


def _failed(count: int, reasons: Sequence[str] = (), notes: Notes | None = None) -> Text:
    marks = " ".join(notes.mark(r, "failed") for r in reasons) if notes else ""
    return Text(f"{count} {marks}".strip(), style="red" if count else "")


# Columns by rank: 0 always shown; at a narrow terminal the highest ranks go first (fit.py).
LIST_COLUMNS = [
    Column("ID"),
    Column("Name", fold_at=24),
    Column("Created", 3),
    Column("Status", 1),
    Column("Exps", 4, "right"),
    Column("Cyc", 4, "right"),
    Column("OK", 2, "right"),
    Column("Fail", 1, "right"),
    Column("tok/s", 2, "right"),
    Column("J/tok"),
]
DETAIL_COLUMNS = [
    Column("#", justify="right"),
    Column("Name", fold_at=28),
    Column("Model", fold_at=24),
    Column("dtype", 4),
    Column("Batch", 2, "right"),
    Column("In", 4, "right"),
    Column("Out", 4, "right"),
    Column("OK", 3, "right"),
    Column("Fail", 1, "right"),
    Column("tok/s", 2, "right"),
    Column("J/tok"),
    Column("CI95", 3),
    Column("CV", 3),
    Column("net J/tok", 3),
    Column("bound", 2),
    Column("W", 4, "right"),
    Column("TTFT ms", 3, "right"),
    Column("ITL ms", 4, "right"),
]


def render_campaign_list(summaries: Sequence[CampaignSummary]) -> list[RenderableType]:
    """One row per campaign (counts, medians over its ok measurements), then the notes."""
    notes = Notes()
    table = FittedTable(LIST_COLUMNS, "lem campaigns (medians over ok cycles)")
    for s in summaries:
        table.add_row(
            plain(s.id),
            plain(s.name),
            _time(s.created_at_unix_s),
            _status(s.status, s.error, notes),
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


def _dtype(e: ExperimentSummary) -> Text:
    """The dtype the cycles ran in: ``float32``, or ``auto→float32`` where the config left
    it to the engine; the config's alone where no cycle said (``—`` without either)."""
    ran = "/".join(e.resolved_dtypes)
    if not ran or e.dtype == ran:
        return Text(printable(e.dtype or ran or NO_DATA), style="" if e.dtype else "dim")
    return Text(printable(f"{e.dtype}→{ran}" if e.dtype else ran))


def render_campaign_detail(detail: CampaignDetail) -> list[RenderableType]:
    """A header with the campaign's facts, then one row per experiment in run order."""
    notes = Notes()
    table = experiment_table(detail.experiments, notes)
    return [render_header(detail.campaign), table, notes.render()]


def render_header(c: CampaignFacts) -> Text:
    """The campaign's facts, one per line; the stopped-by-error line where there is one."""
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
        style = _STATUS_STYLE.get(value, "") if label == "Status" else ""
        header.append(printable(value), style=style)
        header.append("\n")
    if (line := stopped_by_error(c)) is not None:
        header.append(line, style="red")
    header.rstrip()
    return header


def experiment_table(
    experiments: Sequence[ExperimentSummary],
    notes: Notes,
    title: str = "experiments (medians over ok cycles)",
) -> FittedTable:
    """One row per experiment, in the order given (``notes`` gets the reasons and flags)."""
    with_goodput = any(e.median_goodput_share is not None for e in experiments)
    columns = DETAIL_COLUMNS + ([Column("good", 4, "right")] if with_goodput else [])
    table = FittedTable(columns, title)
    for e in experiments:
        latency = [
            _pair_ms(e.median_ttft_p50_ms, e.median_ttft_p99_ms, e.cycles_ok),
            _pair_ms(e.median_itl_p50_ms, e.median_itl_p99_ms, e.cycles_ok),
        ]
        if with_goodput:
            latency.append(_share(e.median_goodput_share))
        table.add_row(
            str(e.position),
            plain(e.name or NO_DATA),
            plain(_model(e)),
            _dtype(e),
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
    servers = [str(e.position) for e in experiments if e.workload_mode == "server"]
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
    return table
