"""How requests reach the engine (the workload) and the latency targets (SLOs) of a run.

``offline``: the prompt set is generated in fixed batches of ``batch_size`` prompts, one
generate call after another (lem's original behaviour). ``server``: requests arrive by a
seeded process into an engine that batches continuously; the arrival process is
``poisson`` (rate ``rate_per_s``), ``gamma`` (rate ``rate_per_s``, shape ``burstiness``) or
``concurrency`` (``concurrency`` requests kept in flight, the next sent when one finishes).

Which backend runs which mode is ``lem.protocol.capabilities``; everything here is plain
data the coordinator validates without any backend installed.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import msgspec

from lem.protocol.engines.spec import Experiment

WorkloadMode = Literal["offline", "server"]
ArrivalName = Literal["poisson", "gamma", "concurrency"]


class SweepConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A load sweep of one server-mode experiment (a campaign expands it; ``lem run`` does
    not). Exactly one of:

    - ``rates``: with a ``poisson`` or ``gamma`` arrival and no ``rate_per_s``. lem first
      measures the maximum throughput (point 0, the *probe*: every request in flight at
      once, arrival ``concurrency`` with ``concurrency`` = the request count), then
      ``rates`` request rates spread evenly from ``light_fraction`` to ``top_fraction`` of
      the probe's completed requests per second (points 1 … ``rates``). It stops at
      saturation: once a point's queue grows (``load_above_capacity``), the higher points
      are not run.
    - ``concurrencies``: with the ``concurrency`` arrival and no ``concurrency``: one point
      per level, ascending; a closed loop cannot overload, so every level runs.

    ``point`` is set by lem's planner (0 the probe, k the k-th rate or level)."""

    rates: int | None = None
    light_fraction: float = 0.1
    top_fraction: float = 1.0
    concurrencies: list[int] | None = None
    point: int | None = None

    def fraction(self, point: int) -> float:
        """The share of the probe's throughput that rate point ``point`` (1 … rates) offers."""
        count = self.rates or 1
        if count == 1:
            return self.top_fraction
        step = (self.top_fraction - self.light_fraction) / (count - 1)
        return self.light_fraction + step * (point - 1)


MAX_SWEEP_POINTS = 100


class WorkloadConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The workload of an experiment. Rates per second, counts of requests.

    ``mode: offline`` reads no other field but ``token_timing``. ``mode: server`` needs
    ``arrival``:

    - ``poisson``: exponential gaps of mean 1/``rate_per_s`` s;
    - ``gamma``: gamma gaps of shape ``burstiness`` (1 is Poisson, below 1 burstier) and
      mean 1/``rate_per_s`` s;
    - ``concurrency``: ``concurrency`` requests in flight, no arrival times.

    The first request arrives at once. Gaps are drawn with ``seed`` (default 0), so a
    config names one schedule. Requests are sent until ``num_requests`` (default
    ``num_prompts``) have been sent and the window's ``min_window_s`` has passed; prompts
    are taken from the prompt set in order, cycled.

    ``sweep``: a load sweep (``SweepConfig``) in place of one rate or concurrency.

    ``token_timing`` records every generated token's time to give TTFT, inter-token
    latencies, TPOT and end-to-end latency per request. It is on unless set to false: the
    loop clock adds no device work, ~0.3 µs of host time per decoding step, and its
    measured cost on an H100 decode was −0.2% by medians (``lem docs measurements``, 5b). Off,
    offline runs generate exactly as without it and report no latency, with the reason.
    """

    mode: WorkloadMode = "offline"
    arrival: ArrivalName | None = None
    rate_per_s: float | None = None
    burstiness: float | None = None
    concurrency: int | None = None
    seed: int | None = None
    num_requests: int | None = None
    token_timing: bool | None = None
    sweep: SweepConfig | None = None


def timing_enabled(workload: WorkloadConfig) -> bool:
    """Whether token times are recorded: ``token_timing`` unless it is false (server mode
    stamps its tokens whatever it says)."""
    return workload.token_timing is not False or workload.mode == "server"


class SloConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Latency targets (ms) for goodput: a request is good when its time to first token is
    at most ``ttft_ms`` and its time per output token (after the first) at most
    ``tpot_ms``. An unset target does not limit; with both unset no goodput is reported."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def is_set(self) -> bool:
        """Whether any target is set."""
        return self.ttft_ms is not None or self.tpot_ms is not None


# The WorkloadConfig fields each arrival process reads (seed and num_requests: all).
_ARRIVAL_FIELDS = {
    "poisson": ("rate_per_s",),
    "gamma": ("rate_per_s", "burstiness"),
    "concurrency": ("concurrency",),
}
_SERVER_ONLY: tuple[str, ...] = ("arrival", "rate_per_s", "burstiness", "concurrency", "seed")
_SERVER_ONLY += ("num_requests", "sweep")


class CheckedExperiment(Experiment, Protocol):
    """What ``workload_problems`` reads of an ``ExperimentConfig`` (typed structurally, so
    this module needs no import of ``config.py``, which imports it)."""

    @property
    def workload(self) -> WorkloadConfig: ...
    @property
    def slo(self) -> SloConfig: ...
    @property
    def measure_prefill(self) -> bool: ...


def workload_problems(config: CheckedExperiment) -> list[tuple[str, str]]:
    """Problems of ``config.workload`` and ``config.slo`` as (dotted field path, problem);
    the backend's support for the mode comes first (see ``capabilities``)."""
    from lem.protocol.capabilities import capability_problems

    problems = capability_problems(config)
    workload = config.workload
    if workload.mode == "offline":
        for field in _SERVER_ONLY:
            if getattr(workload, field) is not None:
                problems.append(
                    (f"workload.{field}", "is not used when workload.mode is 'offline'")
                )
    else:
        problems.extend(_server_problems(config))
    problems.extend(_slo_problems(config.slo, timing_enabled(workload)))
    return problems


def _server_problems(config: CheckedExperiment) -> list[tuple[str, str]]:
    workload = config.workload
    problems: list[tuple[str, str]] = []
    if workload.arrival is None:
        problems.append(
            ("workload.arrival", "is required when workload.mode is 'server' "
             "(poisson, gamma or concurrency)")
        )  # fmt: skip
        return problems
    read = _ARRIVAL_FIELDS[workload.arrival]
    swept = sweep_field(workload)
    if workload.sweep is not None:
        problems.extend(_sweep_problems(workload.sweep, workload.arrival))
    for field in ("rate_per_s", "burstiness", "concurrency"):
        value = getattr(workload, field)
        if field == swept:
            continue  # set by the sweep (a campaign's planner refuses it in the file)
        if field not in read:
            if value is not None:
                problems.append(
                    (f"workload.{field}", f"is not used by the '{workload.arrival}' arrival")
                )
        elif value is None:
            problems.append(
                (f"workload.{field}", f"is required by the '{workload.arrival}' arrival")
            )
        elif not (value > 0 and math.isfinite(value)):
            problems.append((f"workload.{field}", f"must be a finite number > 0, got {value}"))
    if workload.num_requests is not None and workload.num_requests < 1:
        problems.append(("workload.num_requests", f"must be >= 1, got {workload.num_requests}"))
    if workload.token_timing is False:
        problems.append(
            (
                "workload.token_timing",
                "cannot be false in server mode: its latencies are the result",
            )
        )
    if config.measure_prefill:
        problems.append(("measure_prefill", "is for workload.mode 'offline' only"))
    return problems


def sweep_field(workload: WorkloadConfig) -> str | None:
    """The workload field a sweep sets (``rate_per_s`` or ``concurrency``), if any."""
    sweep = workload.sweep
    if sweep is None:
        return None
    return "rate_per_s" if sweep.concurrencies is None else "concurrency"


def _sweep_problems(sweep: SweepConfig, arrival: str) -> list[tuple[str, str]]:
    if (sweep.rates is None) == (sweep.concurrencies is None):
        return [("workload.sweep", "needs exactly one of rates and concurrencies")]
    problems: list[tuple[str, str]] = []
    if sweep.rates is not None:
        if arrival == "concurrency":
            problems.append(
                ("workload.sweep.rates", "needs a poisson or gamma arrival; "
                 "sweep a closed loop with workload.sweep.concurrencies")
            )  # fmt: skip
        if not 1 <= sweep.rates <= MAX_SWEEP_POINTS:
            problems.append(
                ("workload.sweep.rates", f"must be 1 to {MAX_SWEEP_POINTS}, got {sweep.rates}")
            )
        if not 0 < sweep.light_fraction <= sweep.top_fraction <= 2:
            problems.append(
                ("workload.sweep", "needs 0 < light_fraction <= top_fraction <= 2, got "
                 f"{sweep.light_fraction} and {sweep.top_fraction}")
            )  # fmt: skip
    else:
        levels = sweep.concurrencies or []
        if arrival != "concurrency":
            problems.append(
                ("workload.sweep.concurrencies", "needs the concurrency arrival; "
                 "sweep an open loop with workload.sweep.rates")
            )  # fmt: skip
        if not 1 <= len(levels) <= MAX_SWEEP_POINTS:
            problems.append(
                ("workload.sweep.concurrencies", f"needs 1 to {MAX_SWEEP_POINTS} levels")
            )
        elif any(c < 1 for c in levels) or levels != sorted(set(levels)):
            problems.append(
                ("workload.sweep.concurrencies",
                 f"must be ascending, distinct and >= 1, got {levels}")
            )  # fmt: skip
    return problems


def _slo_problems(slo: SloConfig, token_timing: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for field in ("ttft_ms", "tpot_ms"):
        value = getattr(slo, field)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append((f"slo.{field}", f"must be a finite number > 0, got {value}"))
    if slo.is_set and not token_timing:
        problems.append(("slo", "needs token times: workload.token_timing is false"))
    return problems
