"""The steady-state figures of a server-mode window (``Measurement.steady``).

The rule that finds the steady part is ``lem.protocol.steady_state``. Its edges are known
only after the run, so the energy counter is not read at them: the telemetry sidecar has
read each GPU's counter every ``energy_interval_s`` through the window, and the energy
between the edges is that sampled counter, interpolated at each edge (the sidecar's power
samples, integrated, where the counter was not read). Each edge is then known to within
one sampling interval plus one counter update period: the bound is
``2 × (energy_interval_s + counter_period_s) × mean power``. See docs/methodology.md,
"Steady-state windows in server mode".
"""

from __future__ import annotations

from collections.abc import Sequence

from lem.protocol.config import ExperimentConfig
from lem.protocol.results import Steady
from lem.protocol.steady_state import min_steady_s, steady_bound_j, steady_window
from lem.protocol.telemetry import TelemetryWindow
from lem.workers.engines.base import TimedRequest
from lem.workers.metering.telemetry import Sampler, TelemetryUnavailable

TARGET_RELATIVE_BOUND = 0.01  # judge_window's short_window threshold
NO_STEADY_FLAG = "no_steady_state"


def steady_figures(
    config: ExperimentConfig,
    requests: Sequence[TimedRequest],
    window_started_s: float,
    duration_s: float,
    load_growing: bool,
    sampler: Sampler | None,
    begin_monotonic_s: float | None,
    counter_period_s: float | None,
    energy_unavailable_reason: str | None,
) -> Steady:
    """The ``steady`` sub-record of a window (empty outside server mode). ``requests`` on
    perf_counter s, the window opened at ``window_started_s``; ``sampler`` and
    ``begin_monotonic_s`` (the window's monotonic begin) give the energy, None: no GPU
    energy (``energy_unavailable_reason`` says why)."""
    if config.workload.mode != "server":
        return Steady()
    intervals = [
        (r.start_s - window_started_s, (r.token_times_s or [r.start_s])[-1] - window_started_s)
        for r in requests
    ]
    metered = sampler is not None and begin_monotonic_s is not None
    uncertainty_s = 0.0
    if metered and sampler is not None:
        uncertainty_s = sampler.energy_interval_s + (counter_period_s or 0.1)
    window = steady_window(
        intervals,
        duration_s,
        closed_loop=config.workload.arrival == "concurrency",
        min_duration_s=min_steady_s(uncertainty_s, TARGET_RELATIVE_BOUND),
        load_growing=load_growing,
    )
    if window.start_s is None or window.end_s is None:
        return Steady(
            steady_level=window.level, steady_unavailable_reason=window.unavailable_reason
        )
    start_s, end_s = window.start_s, window.end_s
    tokens = sum(
        1 for r in requests for t in r.token_times_s if start_s <= t - window_started_s <= end_s
    )
    energy_j: float | None = None
    method: str | None = None
    reason: str | None = energy_unavailable_reason or "no GPU energy"
    if metered and sampler is not None and begin_monotonic_s is not None:
        energy_j, method, reason = _sampled_energy(
            sampler, begin_monotonic_s + start_s, begin_monotonic_s + end_s
        )
    duration = end_s - start_s
    bound_j = None
    if energy_j is not None and method == "sampled_energy_counter":
        bound_j = steady_bound_j(uncertainty_s, energy_j / duration)
    return Steady(
        steady_window_start_s=start_s,
        steady_window_end_s=end_s,
        steady_duration_s=duration,
        steady_level=window.level,
        steady_requests=window.requests_sent,
        steady_output_tokens=tokens,
        steady_energy_j=energy_j,
        steady_energy_per_output_token_j=energy_j / tokens if energy_j and tokens else None,
        steady_energy_method=method,
        steady_energy_bound_j=bound_j,
        steady_unavailable_reason=None if energy_j is not None else reason,
    )


def _sampled_energy(
    sampler: Sampler, begin_s: float, end_s: float
) -> tuple[float | None, str | None, str | None]:
    """Energy (J) of [begin, end] (monotonic s) summed over the sampled GPUs, its method,
    or None with the reason."""
    try:
        telemetry = sampler.window(begin_s, end_s)
    except TelemetryUnavailable as exc:
        return None, None, f"no telemetry over the steady window: {exc}"
    return summed(telemetry)


def summed(telemetry: TelemetryWindow) -> tuple[float | None, str | None, str | None]:
    """The sampled counter summed over GPUs when every GPU has one, else their integrated
    power when every GPU has that; else None with the reason."""
    gpus = telemetry.per_gpu
    if not gpus:
        return None, None, "the sampler recorded no GPU"
    counters = [g.counter_energy_j for g in gpus]
    if all(c is not None for c in counters):
        return sum(c for c in counters if c is not None), "sampled_energy_counter", None
    powers = [g.integrated_energy_j for g in gpus]
    if all(p is not None for p in powers):
        return sum(p for p in powers if p is not None), "sampled_power", None
    why = "; ".join(
        f"{g.gpu_uuid}: {g.counter_energy_unavailable_reason or g.integrated_energy_unavailable_reason}"  # noqa: E501
        for g in gpus
    )
    return None, None, f"no sampled energy over the steady window ({why})"
