"""The report's reference sections: the environment the measurements ran in, each
experiment's effective config with the source of every field, and the method."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lem.coordinator.report.gather import CampaignData
from lem.coordinator.report.markup import (
    NOT_RECORDED,
    esc,
    facts,
    null,
    number,
    table,
    text_or_null,
)

# Stores written before clock settings were recorded (2026-11-27) have none.
CLOCKS_NOT_STORED = (
    "clock settings were not recorded by the lem that made this result; the SM clock "
    "observed at each window's start and end is in the telemetry"
)


def _gpu_cell(gpus: Sequence[dict[str, Any]], key: str, unit: str = "") -> str:
    values = [g.get(key) for g in gpus]
    if not gpus:
        return null("no GPU in this environment")
    if all(v is None for v in values):
        return null(f"NVML gave no {key}")
    return "<br>".join(
        null("not reported") if v is None else esc(f"{v:g} {unit}".strip() if unit else v)
        for v in values
    )


def _observed_clocks_mhz(data: CampaignData, uuids: Sequence[str]) -> str:
    """The range of SM clocks seen at window edges on these GPUs, from the telemetry."""
    clocks = [
        c
        for cycle in data.cycles
        if cycle.measurement is not None and cycle.measurement.observed.telemetry is not None
        for g in cycle.measurement.observed.telemetry.per_gpu
        if g.gpu_uuid in uuids
        for c in (g.sm_clock_start_mhz, g.sm_clock_end_mhz)
        if c is not None
    ]
    return f"observed SM clock {min(clocks)}–{max(clocks)} MHz" if clocks else ""


def _clocks_cell(data: CampaignData, gpus: Sequence[dict[str, Any]]) -> str:
    """Per GPU: application and maximum SM/memory clocks (MHz) as NVML reported them when
    the worker started, then the SM clocks the telemetry saw at the window edges."""
    observed = _observed_clocks_mhz(data, [str(g.get("uuid")) for g in gpus if g.get("uuid")])
    keys = ("app_sm_clock_mhz", "app_mem_clock_mhz", "max_sm_clock_mhz", "max_mem_clock_mhz")
    if not gpus or all(g.get(k) is None for g in gpus for k in keys):
        return null(CLOCKS_NOT_STORED) + (esc(f"; {observed}") if observed else "")

    def mhz(value: Any) -> str:
        return "?" if value is None else f"{value}"

    lines = [
        f"application SM {mhz(g.get('app_sm_clock_mhz'))} / memory "
        f"{mhz(g.get('app_mem_clock_mhz'))} MHz; maximum SM {mhz(g.get('max_sm_clock_mhz'))} "
        f"/ memory {mhz(g.get('max_mem_clock_mhz'))} MHz"
        for g in gpus
    ]
    return "<br>".join(esc(line) for line in [*lines, observed] if line)


def _mib(value: Any) -> str:
    return null("not recorded by this lem") if value is None else esc(f"{value:,.0f} MiB")


def _result_schema_versions(data: CampaignData) -> str:
    """The store schema versions the results were recorded under."""
    versions = sorted(
        {
            str(c.measurement.store_schema_version)
            for c in data.cycles
            if c.measurement is not None and c.measurement.store_schema_version is not None
        }
    )
    return esc(", ".join(versions)) if versions else null("recorded before results carried it")


def environment_section(data: CampaignData) -> str:
    """One facts table per distinct environment the campaign's measurements ran in."""
    c = data.campaign
    campaign_facts = facts(
        [
            ("Campaign", esc(c.id)),
            ("Name", esc(c.name)),
            ("Status", esc(c.status)),
            ("Campaign file", text_or_null(c.source_path)),
            ("Campaign file SHA-256", text_or_null(c.source_hash)),
            ("Coordinator host", text_or_null(data.coordinator_host)),
            ("Results store", esc(data.store_path)),
            ("Store schema version", esc(data.schema_version)),
            ("Results recorded under schema", _result_schema_versions(data)),
            ("Experiments × cycles", esc(f"{c.experiment_count} × {c.cycles}")),
        ]
    )
    parts = [campaign_facts]
    if not data.environments:
        parts.append(f"<p>{null('no ok measurement: no environment was stored')}</p>")
    for i, env in enumerate(data.environments, 1):
        gpus = env.get("gpus") or []
        uuids = [g.get("uuid") for g in gpus]
        packages = env.get("packages") or {}
        rows = [
            ("Host", text_or_null(env.get("hostname"))),
            ("OS", text_or_null(env.get("os_release"), "not recorded by this lem")),
            ("CPU", text_or_null(env.get("cpu_model"), "not recorded by this lem")),
            ("Logical CPUs", text_or_null(env.get("cpu_count"), "not recorded by this lem")),
            ("Host memory", _mib(env.get("memory_total_mib"))),
            ("Device", text_or_null(env.get("device"))),
            ("GPU model", _gpu_cell(gpus, "name")),
            ("GPU UUID", _gpu_cell(gpus, "uuid")),
            ("GPU memory", _gpu_cell(gpus, "memory_total_mib", "MiB")),
            ("Power limit", _gpu_cell(gpus, "power_limit_w", "W")),
            ("Energy counter supported", _gpu_cell(gpus, "energy_counter_supported")),
            ("MIG mode", _gpu_cell(gpus, "mig_mode_enabled")),
            ("Clocks", _clocks_cell(data, gpus)),
            ("Driver", text_or_null(env.get("driver_version"), "NVML gave none")),
            ("CUDA (driver)", text_or_null(env.get("cuda_version"), "NVML gave none")),
            ("NVML", esc(env.get("nvml_unavailable_reason") or "available")),
            ("Engine", esc(f"{env.get('backend')} {env.get('backend_version') or ''}".strip())),
            (
                "Libraries",
                "<br>".join(esc(f"{k} {v}") for k, v in sorted(packages.items()))
                or null("none recorded"),
            ),
            ("Engine environment lock", _lock_cell(env.get("engine_lock"))),
            ("Python", text_or_null(env.get("python_version"))),
            ("lem version", text_or_null(env.get("lem_version"))),
            ("lem revision", text_or_null(env.get("lem_revision"), "not a git checkout")),
            ("Worker protocol version", text_or_null(env.get("protocol_version"))),
        ]
        title = f"Environment {i} of {len(data.environments)}" + (
            f": {', '.join(u for u in uuids if u)}" if uuids else ""
        )
        parts.append(f"<h3>{esc(title)}</h3>{facts(rows)}")
    return "".join(parts)


def _lock_cell(lock: dict[str, Any] | None) -> str:
    """The lock an environment was made from or is nearest to, and whether it matched."""
    if not lock:
        return null("not recorded by this lem")
    if lock.get("name") is None:
        return null(str(lock.get("unavailable_reason") or "no lock"))
    head = f"{lock['name']} sha256:{lock.get('sha256') or '-'}"
    how = "made from it" if lock.get("made_from") else "nearest lock"
    if lock.get("matches") is None:
        return esc(f"{head} ({lock.get('unavailable_reason')})")
    verdict = "matches" if lock["matches"] else f"differs: {lock.get('summary', '')}"
    return esc(f"{head} ({how}); {verdict}")


def _value(value: Any) -> str:
    return esc(value if isinstance(value, str) else json.dumps(value))


def config_section(data: CampaignData) -> str:
    """Per experiment (of a sampled campaign, per experiment of the summary table), a
    collapsed table of every effective config field and its source."""
    parts = []
    if data.sample is not None:
        parts.append(
            f"<p class='muted'>The {len(data.sample.table):,} experiments of the summary "
            f"table, of {data.sample.total:,}; any other with <code>lem report "
            f"{esc(data.campaign.id)} --experiment NAME_OR_POSITION</code>.</p>"
        )
    for e in data.detailed():
        provenance = e.provenance
        rows = [
            [
                f"<code>{esc(k)}</code>",
                f"<code>{_value(v)}</code>",
                null("stored before provenance was recorded")
                if provenance is None
                else text_or_null(provenance.get(k), "no source recorded for this field"),
            ]
            for k, v in sorted(e.config.items())
        ]
        axes = ", ".join(f"{a}={_value(e.config.get(a))}" for a in data.axes)
        label = f"#{e.position} {e.name or e.id}" + (f" ({axes})" if axes else "")
        parts.append(
            f'<details id="config-{esc(e.id)}"><summary>{esc(label)}'
            f" <small>{esc(e.id)}</small></summary>"
            + table(["field", "value", "source"], rows, "config")
            + "</details>"
        )
    if data.source_text:
        parts.append(
            "<details><summary>The campaign file as run</summary>"
            f"<pre>{esc(data.source_text)}</pre></details>"
        )
    return "".join(parts)


METHOD = """\
<p>Energy is the difference of each GPU's NVML total-energy counter between the two edges
of a measured window (device synchronised at both edges, counter reads outside the timed
interval), summed over the worker's GPUs: <b>gross</b> J, idle draw included. J/token is
that energy over the window's output tokens. <b>Net</b> energy subtracts, per GPU, its idle
power baseline (sampled at 0.1 s until its CV is at most the threshold) times the window's
duration, clamped at 0 (flag <code>net_energy_clamped</code>). The counter advances only
every <code>energy_counter_period_s</code>, so each edge may be off by one period of
energy: the <b>quantisation bound</b> is 2 × period × average power, and a window is made
long enough to keep it at or below 0.5% (flag <code>short_window</code> above 1%). Where
a counter cannot be read, integrated power samples stand in (flag
<code>power_integration</code>); with no GPU energy at all the figure is null with the
reason, never 0. Warmup runs before the window until batch times settle; a sidecar
samples power, temperature and clocks every 0.1 s. CIs are 95% Student's t intervals of
the mean over cycles. Full method: <code>lem docs methodology</code> (docs/methodology.md
in the lem repository).</p>"""


def method_section(data: CampaignData) -> str:
    """The method in brief, then what the stored figures say about how they were made."""
    ok = [c.measurement for c in data.cycles if c.measurement is not None]
    energy = [m.energy for m in ok]
    methods = Counter(str(g.method) for e in energy for g in e.gpu_energy)
    periods_s = [e.energy_counter_period_s for e in energy if e.energy_counter_period_s is not None]
    durations_s = [m.work.duration_s for m in ok]
    bounds = [e.energy_bound_j / e.energy_j for e in energy if e.energy_bound_j and e.energy_j]
    baselines = Counter(
        f"{b.method}, {'accepted' if b.accepted else 'not accepted'}"
        for e in energy
        for b in e.idle_baselines
    )
    converged = [m.preparation.warmup_converged for m in ok]
    warmups = Counter(
        "fixed" if c is None else "converged" if c else "stopped at its limit" for c in converged
    )

    def counted(counter: Counter[str], why: str) -> str:
        if not counter:
            return null(why)
        return esc(", ".join(f"{k} ({n} GPU-windows)" for k, n in counter.most_common()))

    def span(values: Sequence[float], unit: str, why: str, scale: float = 1.0) -> str:
        if not values:
            return null(why)
        low, high = number(min(values) * scale), number(max(values) * scale)
        return esc(f"{low} {unit}" if low == high else f"{low}–{high} {unit}")

    stated = facts(
        [
            ("Energy method", counted(methods, "no ok measurement read GPU energy")),
            ("Counter update period", span(periods_s, "s", "not inferred (no counter)")),
            ("Measured window", span(durations_s, "s", "no ok measurement")),
            ("Quantisation bound", span(bounds, "% of energy", NOT_RECORDED, 100.0)),
            ("Idle baselines", counted(baselines, "no idle baseline (no GPU, or disabled)")),
            ("Warmup", esc(", ".join(f"{k} ({n} cycles)" for k, n in warmups.most_common()))
             if warmups else null("no ok measurement")),
            ("Prompts", text_or_null(ok[0].work.prompt_source if ok else None)),
        ]
    )  # fmt: skip
    return METHOD + "<h3>As recorded for this campaign</h3>" + stated
