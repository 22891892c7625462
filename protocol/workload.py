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
_SERVER_ONLY = ("arrival", "rate_per_s", "burstiness", "concurrency", "seed", "num_requests")


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
    for field in ("rate_per_s", "burstiness", "concurrency"):
        value = getattr(workload, field)
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


def _slo_problems(slo: SloConfig, token_timing: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for field in ("ttft_ms", "tpot_ms"):
        value = getattr(slo, field)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append((f"slo.{field}", f"must be a finite number > 0, got {value}"))
    if slo.is_set and not token_timing:
        problems.append(("slo", "needs token times: workload.token_timing is false"))
    return problems
