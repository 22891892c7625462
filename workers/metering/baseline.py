"""Idle power baseline of one GPU, and net (above-idle) energy from it.

The baseline is taken from sampled power readings (NVML's power query costs ~2 µs, the
energy counter ~4 ms), averaged over a window once the readings have settled. The power
reader, clock and sleep are passed in, so nothing here imports a GPU library and tests can
drive it with scripted readings and a fake clock. One call measures one GPU; call it once
per GPU UUID.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Tolerance for ceil() on ratios that are whole numbers up to float rounding.
_RATIO_EPSILON = 1e-9


@dataclass(frozen=True)
class IdleBaseline:
    """Idle power of one GPU.

    ``power_w``: mean power in watts over the accepted window (or, when not accepted, over
    the steadiest window seen); None when no window could be formed.
    ``cv``: coefficient of variation of that window (population stdev / mean, unitless).
    ``samples``: readings in that window (readings taken in all when there is none).
    ``window_duration_s``: seconds from its first to its last reading.
    ``duration_s``: seconds spent measuring in all, settling included.
    ``measured_at_unix_s``: wall-clock time (Unix seconds) when measuring ended.
    ``accepted``: True only if the window's CV was ≤ the threshold; otherwise ``reason``
    says why, and ``power_w`` must be treated as unstable.
    """

    power_w: float | None
    cv: float | None
    samples: int
    window_duration_s: float | None
    duration_s: float
    measured_at_unix_s: float
    method: str
    accepted: bool
    reason: str | None


def _cv(values: list[float]) -> float:
    """Coefficient of variation (unitless); infinite when the mean is ≤ 0 W."""
    mean_w = statistics.fmean(values)
    if mean_w <= 0:
        return math.inf
    return statistics.pstdev(values, mu=mean_w) / mean_w


def measure_idle_baseline(
    read_power_w: Callable[[], float | None],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    wall_clock: Callable[[], float] = time.time,
    sample_interval_s: float = 0.1,
    window_s: float = 5.0,
    cv_threshold: float = 0.02,
    max_wait_s: float = 60.0,
    method: str = "nvml_power_samples",
) -> IdleBaseline:
    """Sample idle power until it settles, and return its mean in watts.

    ``read_power_w`` returns one power reading in watts (None if it cannot be read);
    ``clock`` is a monotonic clock in seconds; ``sleep`` sleeps for a number of seconds;
    ``wall_clock`` gives Unix seconds for ``measured_at_unix_s``.

    A reading is taken every ``sample_interval_s`` seconds. The window is the last
    ``ceil(window_s / sample_interval_s)`` readings (``window_s`` seconds of sampling); it
    is accepted as soon as its CV (stdev / mean) is ≤ ``cv_threshold``. After ``max_wait_s``
    seconds without that, the steadiest (lowest-CV) window seen is returned with
    ``accepted=False`` and a reason. The wait overshoots ``max_wait_s`` by at most one
    interval plus a reading. A None reading ends at once with ``power_w=None`` and a reason.

    Defaults: a reading every 0.1 s is cheap (~2 µs each) and gives 50 per 5 s window;
    5 s smooths sub-second wobble; a 2% CV (stdev ~1.5 W at 75 W idle) rejects a GPU still
    cooling or clocking down; 60 s bounds the cost when a GPU never settles.
    """
    if sample_interval_s <= 0 or window_s <= 0 or max_wait_s <= 0 or cv_threshold < 0:
        raise ValueError("sample_interval_s, window_s and max_wait_s must be > 0, cv ≥ 0")
    if window_s > max_wait_s:
        raise ValueError(f"window_s ({window_s} s) exceeds max_wait_s ({max_wait_s} s)")
    window_n = max(2, math.ceil(window_s / sample_interval_s - _RATIO_EPSILON))
    readings: deque[tuple[float, float]] = deque(maxlen=window_n)  # (clock s, power W)
    best: tuple[float, float, int, float] | None = None  # (cv, mean W, samples, span s)
    start_s: float | None = None
    taken = 0  # readings taken in all
    while True:
        power_w = read_power_w()
        now_s = clock()
        if start_s is None:
            start_s = now_s
        elapsed_s = now_s - start_s
        if power_w is None:
            return IdleBaseline(
                power_w=None,
                cv=None,
                samples=taken,
                window_duration_s=None,
                duration_s=elapsed_s,
                measured_at_unix_s=wall_clock(),
                method=method,
                accepted=False,
                reason=f"power reading unavailable (after {taken} good readings)",
            )
        taken += 1
        readings.append((now_s, power_w))
        if len(readings) == window_n:
            values_w = [p for _, p in readings]
            cv = _cv(values_w)
            span_s = readings[-1][0] - readings[0][0]
            if best is None or cv < best[0]:
                best = (cv, statistics.fmean(values_w), window_n, span_s)
            if cv <= cv_threshold:
                return IdleBaseline(
                    power_w=statistics.fmean(values_w),
                    cv=cv,
                    samples=window_n,
                    window_duration_s=span_s,
                    duration_s=elapsed_s,
                    measured_at_unix_s=wall_clock(),
                    method=method,
                    accepted=True,
                    reason=None,
                )
        if elapsed_s >= max_wait_s:
            break
        sleep(sample_interval_s)
    if best is None:
        reason = f"unstable: no full {window_s} s window of readings within {max_wait_s} s"
        return IdleBaseline(None, None, taken, None, elapsed_s, wall_clock(), method, False, reason)
    best_cv, best_mean_w, best_n, best_span_s = best
    reason = (
        f"unstable: idle power never settled within {max_wait_s} s "
        f"(lowest CV {best_cv:.4f} > threshold {cv_threshold})"
    )
    return IdleBaseline(
        power_w=best_mean_w,
        cv=best_cv,
        samples=best_n,
        window_duration_s=best_span_s,
        duration_s=elapsed_s,
        measured_at_unix_s=wall_clock(),
        method=method,
        accepted=False,
        reason=reason,
    )


def net_energy_j(
    gross_energy_j: float | None, baseline_power_w: float | None, duration_s: float
) -> tuple[float | None, str | None]:
    """Energy above idle in joules: ``max(0, gross_energy_j − baseline_power_w × duration_s)``.

    Returns ``(net_j, note)``. ``note`` is None when the subtraction was clean; it is the
    reason when ``net_j`` is None (an input unknown, or a negative duration); and when the
    idle draw exceeded the gross energy it starts with ``"clamped to 0:"`` and ``net_j`` is
    0.0 — the baseline was above the load, a red flag to surface (see ``net_energy_clamped``).
    """
    if gross_energy_j is None:
        return None, "gross energy unavailable"
    if baseline_power_w is None:
        return None, "idle baseline unavailable"
    if duration_s < 0:
        return None, f"negative window duration ({duration_s} s)"
    idle_j = baseline_power_w * duration_s
    net_j = gross_energy_j - idle_j
    if net_j < 0:
        return 0.0, (
            f"clamped to 0: idle baseline {baseline_power_w:.1f} W × {duration_s:.3f} s = "
            f"{idle_j:.1f} J exceeds gross {gross_energy_j:.1f} J"
        )
    return net_j, None


def net_energy_clamped(
    gross_energy_j: float | None, baseline_power_w: float | None, duration_s: float
) -> bool:
    """True when ``net_energy_j`` would clamp: idle J (W × s) above the gross energy in J."""
    if gross_energy_j is None or baseline_power_w is None or duration_s < 0:
        return False
    return gross_energy_j - baseline_power_w * duration_s < 0


def baseline_age_s(baseline: IdleBaseline, now_unix_s: float) -> float:
    """Seconds since the baseline was measured (negative if the wall clock went back)."""
    return now_unix_s - baseline.measured_at_unix_s


def needs_remeasure(baseline: IdleBaseline | None, now_unix_s: float, max_age_s: float) -> bool:
    """True when the baseline should be measured again before it is used.

    That is: there is none, it was not accepted, it has no power, it is older than
    ``max_age_s`` seconds, or it appears to come from the future (wall clock went back).
    """
    if baseline is None or not baseline.accepted or baseline.power_w is None:
        return True
    age_s = baseline_age_s(baseline, now_unix_s)
    return age_s < 0 or age_s > max_age_s
