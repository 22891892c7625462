"""Warming up until throughput has converged, not for a fixed number of batches.

Eager decode on a host-bound machine speeds up for minutes after load (the shared notes
saw 560 → 2,100–2,900 tok/s at batch 32 over 1–2.5 minutes). A fixed warmup then measures
a moving target. Here warmup batches run until two things hold for the last ``window``
batch durations: their coefficient of variation is at most ``until_cv`` (no noise) and their
mean differs from the mean of the ``window`` batches before them by at most ``until_cv``
(no drift) — bounded by a maximum batch count and a time limit — and the outcome
(converged or not) is recorded. The drift test matters: on the H100 VM a slow climb of
~0.5% a batch passed a CV-only test while eager throughput rose 1,730 → 2,560 tok/s over
the next three cycles.
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


def _drift(durations_s: list[float], window: int) -> float | None:
    """Relative change of the mean duration, last ``window`` batches against the ``window``
    before them; None until there are ``2 * window`` batches."""
    if len(durations_s) < 2 * window:
        return None
    last_s = statistics.fmean(durations_s[-window:])
    before_s = statistics.fmean(durations_s[-2 * window : -window])
    return abs(last_s - before_s) / before_s if before_s > 0 else float("inf")


def warm_up(
    run_batch: Callable[[int], None],
    fixed_batches: int,
    config: WarmupConfig,
    clock: Callable[[], float] = time.perf_counter,
) -> WarmupOutcome:
    """Run ``run_batch(i)`` (synchronised: it returns when the batch is done) until done.

    Without ``config.until_cv``: exactly ``fixed_batches`` batches. With it: at least
    ``max(fixed_batches, 2 * config.window)`` batches, then until the CV of the last
    ``config.window`` durations and their mean's drift against the window before are both
    ≤ ``until_cv``, at most ``max_batches`` or ``max_s``.
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
        drift = _drift(durations_s, config.window)
        steady = cv is not None and cv <= config.until_cv
        settled = drift is not None and drift <= config.until_cv
        if len(durations_s) >= minimum and steady and settled:
            return WarmupOutcome(len(durations_s), clock() - started_s, cv, True)
        if len(durations_s) >= config.max_batches or clock() - started_s >= config.max_s:
            return WarmupOutcome(len(durations_s), clock() - started_s, cv, False)
