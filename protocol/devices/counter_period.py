"""How often a GPU's cumulative energy counter actually advances.

NVML's total-energy counter (mJ) is readable at any time but only changes when the driver
refreshes it — about every 0.100 s on the H100 lent to lem. A window measured as a counter
difference is therefore uncertain by up to one update period at each edge. Detect the
period once per worker, read back-to-back (one read costs ~4 ms on an H100, so reading in a
tight loop is naturally paced), and use it for the window's error bound.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CounterPeriod:
    """The detected update period in seconds, or None with the reason."""

    period_s: float | None
    changes_seen: int
    reads: int
    reason: str | None = None


def period_from_samples(
    samples: Sequence[tuple[float, int]], min_changes: int = 3
) -> CounterPeriod:
    """Median interval between value changes of ``(time_s, counter_mj)`` samples.

    The first change only marks a phase; intervals are measured between later changes.
    A counter that never moves (unsupported, or a frozen driver) yields None.
    """
    change_times_s = [
        t
        for (t, value), (_, previous) in zip(samples[1:], samples, strict=False)
        if value != previous
    ]
    if len(change_times_s) < min_changes:
        return CounterPeriod(
            None,
            len(change_times_s),
            len(samples),
            f"the energy counter changed {len(change_times_s)} time(s) in {len(samples)} reads; "
            f"need {min_changes} to infer its update period",
        )
    intervals_s = [b - a for a, b in itertools.pairwise(change_times_s)]
    return CounterPeriod(statistics.median(intervals_s), len(change_times_s), len(samples))


def detect_update_period(
    read_mj: Callable[[], int | str],
    duration_s: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> CounterPeriod:
    """Read the counter back to back for ``duration_s`` and infer its update period.

    ``read_mj`` returns the counter in mJ, or a reason string when it cannot be read.
    """
    samples: list[tuple[float, int]] = []
    end_s = clock() + duration_s
    while (now_s := clock()) < end_s:
        value = read_mj()
        if isinstance(value, str):
            return CounterPeriod(None, 0, len(samples), value)
        samples.append((now_s, value))
    return period_from_samples(samples)


def detect_update_periods(
    read_all_mj: Callable[[], dict[str, int | str]],
    duration_s: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, CounterPeriod]:
    """``detect_update_period`` for several GPUs at once (one pass of reads, keyed by UUID)."""
    samples: dict[str, list[tuple[float, int]]] = {}
    failures: dict[str, str] = {}
    end_s = clock() + duration_s
    while (now_s := clock()) < end_s:
        for uuid, value in read_all_mj().items():
            if isinstance(value, str):
                failures.setdefault(uuid, value)
            else:
                samples.setdefault(uuid, []).append((now_s, value))
    periods = {uuid: period_from_samples(s) for uuid, s in samples.items() if uuid not in failures}
    periods.update({uuid: CounterPeriod(None, 0, 0, reason) for uuid, reason in failures.items()})
    return periods


def slowest_period_s(periods: dict[str, CounterPeriod]) -> tuple[float | None, str | None]:
    """The longest period over GPUs (it bounds every GPU's edge error), or None + reason."""
    unknown = [f"{uuid}: {p.reason}" for uuid, p in periods.items() if p.period_s is None]
    if unknown or not periods:
        return None, "; ".join(unknown) or "no GPU to read"
    return max(p.period_s for p in periods.values() if p.period_s is not None), None
