"""Warming up until throughput has converged, not for a fixed number of batches.

Eager decode on a host-bound machine speeds up for minutes after load (the shared notes
saw 560 → 2,100–2,900 tok/s at batch 32 over 1–2.5 minutes). A fixed warmup then measures
a moving target. Here warmup batches run until the coefficient of variation of the last
``window`` batch durations is at most ``cv_threshold`` — bounded by a minimum and maximum
batch count and a time limit — and the outcome (converged or not) is recorded.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from lem.protocol.config import WarmupConfig


@dataclass(frozen=True)
class WarmupOutcome:
    """Batches run, seconds spent, the final CV of batch durations, and convergence.

    ``converged`` is None when no convergence was asked for (a fixed batch count).
    """

    batches: int
    duration_s: float
    final_cv: float | None
    converged: bool | None


def _cv(values: list[float]) -> float:
    mean_s = statistics.fmean(values)
    return statistics.stdev(values) / mean_s if mean_s > 0 else float("inf")


def warm_up(
    run_batch: Callable[[int], None],
    fixed_batches: int,
    config: WarmupConfig,
    clock: Callable[[], float] = time.perf_counter,
) -> WarmupOutcome:
    """Run ``run_batch(i)`` (synchronised: it returns when the batch is done) until done.

    Without ``config.until_cv``: exactly ``fixed_batches`` batches. With it: at least
    ``max(fixed_batches, config.window)`` batches, then until the CV of the last
    ``config.window`` durations is ≤ ``until_cv``, at most ``max_batches`` or ``max_s``.
    """
    started_s = clock()
    if config.until_cv is None:
        for i in range(fixed_batches):
            run_batch(i)
        return WarmupOutcome(fixed_batches, clock() - started_s, None, None)
    durations_s: list[float] = []
    minimum = max(fixed_batches, config.window)
    while True:
        batch_start_s = clock()
        run_batch(len(durations_s))
        durations_s.append(clock() - batch_start_s)
        cv = _cv(durations_s[-config.window :]) if len(durations_s) >= config.window else None
        if len(durations_s) >= minimum and cv is not None and cv <= config.until_cv:
            return WarmupOutcome(len(durations_s), clock() - started_s, cv, True)
        if len(durations_s) >= config.max_batches or clock() - started_s >= config.max_s:
            return WarmupOutcome(len(durations_s), clock() - started_s, cv, False)
