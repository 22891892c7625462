"""Running a load sweep's points (``workload.sweep``; planned as the innermost axis by
``planning/sweep_axis.py``, so point k of a sweep sits k positions after its point 0).

- A concurrency sweep's points are ordinary experiments: the planner set each level.
- A rate sweep's point 0, the *probe*, runs with every request in flight at once (arrival
  ``concurrency``, ``concurrency`` = the request count): the maximum throughput.
- Its point k runs at ``fraction(k)`` × the probe's completed requests per second, taken
  from the probe's lowest-cycle ok measurement. The rate is fixed when the point's first
  cycle runs and stored in its experiment's config, so later cycles and resumes reuse it.
- A point is not run (``Skip``) above saturation: once a lower point of the sweep has a
  measurement flagged ``load_above_capacity``; nor while the probe has no measurement (a
  resume runs it once the probe has one).

A point waits until the lower points of its cycle have finished in this run (parallel
lanes may hold them), so the probe's rate and the saturation check are known.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from lem.coordinator.planning.campaign import PlannedExperiment
from lem.protocol.config import ExperimentConfig
from lem.protocol.results import Measurement
from lem.protocol.workload import SweepConfig

SATURATED_FLAG = "load_above_capacity"
WAIT_SLICE_S = 0.2


@dataclass(frozen=True)
class Skip:
    """A sweep point not run now, and why."""

    reason: str


# Reads of the store the resolution needs (the runner holds its lock around each call).
ExperimentAt = Callable[[int], tuple[str, ExperimentConfig] | None]
OkMeasurements = Callable[[str], list[Measurement]]  # experiment id → ok, by cycle


def rate_sweep(config: ExperimentConfig) -> SweepConfig | None:
    """``config``'s rate sweep, if it is a point of one."""
    sweep = config.workload.sweep
    if sweep is None or sweep.rates is None or sweep.point is None:
        return None
    return sweep


def requests_per_s(m: Measurement) -> float | None:
    """Completed requests per second over the measured window."""
    if m.work.duration_s <= 0 or m.work.num_prompts <= 0:
        return None
    return m.work.num_prompts / m.work.duration_s


def probe_config(config: ExperimentConfig) -> ExperimentConfig:
    """Point 0 of a rate sweep: every request in flight at once."""
    workload = config.workload
    count = workload.num_requests or config.num_prompts
    resolved = msgspec.structs.replace(
        workload, arrival="concurrency", concurrency=count, rate_per_s=None, burstiness=None
    )
    return msgspec.structs.replace(config, workload=resolved)


class SweepPoints:
    """Which (position, cycle) pairs have finished, in this run or before it; a rate sweep's
    point waits here for the lower points of its cycle."""

    def __init__(self, done: set[tuple[int, int]]) -> None:
        self._finished = set(done)
        self._cv = threading.Condition()

    def finished(self, position: int, cycle: int) -> None:
        with self._cv:
            self._finished.add((position, cycle))
            self._cv.notify_all()

    def wait(
        self, pairs: list[tuple[int, int]], stopping: threading.Event | None, timeout_s: float
    ) -> bool:
        """Whether every pair finished within ``timeout_s`` (False too when stopped)."""
        deadline_s = time.monotonic() + timeout_s
        with self._cv:
            while not self._finished.issuperset(pairs):
                if (stopping is not None and stopping.is_set()) or time.monotonic() > deadline_s:
                    return False
                self._cv.wait(WAIT_SLICE_S)
        return True


def resolve(
    exp: PlannedExperiment,
    cycle: int,
    points: SweepPoints,
    experiment_at: ExperimentAt,
    ok_measurements: OkMeasurements,
    stopping: threading.Event | None = None,
    max_attempts: int = 1,
) -> ExperimentConfig | Skip:
    """The config to run ``exp``'s cycle with, or why it is not run now."""
    sweep = rate_sweep(exp.config)
    if sweep is None or sweep.point is None:
        return exp.config
    point = sweep.point
    if point == 0:
        return probe_config(exp.config)
    first = exp.position - point
    lower = [(first + j, cycle) for j in range(point)]
    budget_s = point * (exp.config.timeout_s * max_attempts + 60.0)
    if not points.wait(lower, stopping, budget_s):
        return Skip("the sweep's lower points did not finish (stopped or timed out)")
    for j in range(1, point):
        stored = experiment_at(first + j)
        if stored is None:
            continue
        for m in ok_measurements(stored[0]):
            if SATURATED_FLAG in m.flags:
                rate = stored[1].workload.rate_per_s
                at = f" ({rate:.3g} req/s)" if rate is not None else ""
                return Skip(
                    f"above saturation: sweep point {j}{at} already overloaded the server "
                    f"({SATURATED_FLAG}, cycle {m.cycle})"
                )
    own = experiment_at(exp.position)
    if own is not None and own[1].workload.rate_per_s is not None:
        return own[1]  # fixed when its first cycle ran
    probe = experiment_at(first)
    probe_rates = [] if probe is None else [requests_per_s(m) for m in ok_measurements(probe[0])]
    max_per_s = next((r for r in probe_rates if r is not None), None)
    if max_per_s is None:
        return Skip(
            "no rate yet: the sweep's probe (maximum throughput) has no measurement; "
            "lem resume runs this point once it has one"
        )
    workload = msgspec.structs.replace(
        exp.config.workload, rate_per_s=round(sweep.fraction(point) * max_per_s, 6)
    )
    return msgspec.structs.replace(exp.config, workload=workload)
