"""How long a measured window must be for NVML's energy counter to be trusted.

NVML's total-energy counter does not advance continuously: on H100 it steps about every
0.100 s. A window read as a counter difference can therefore be off by up to one update
period at each edge, i.e. by ``2 × period_s × avg_power_w`` joules. These functions turn
that bound into window lengths, repetition counts and per-window verdicts. Pure logic:
no GPU library is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Tolerance for ceil() on ratios that are whole numbers up to float rounding (e.g. 1.1/0.1).
_RATIO_EPSILON = 1e-9


def quantisation_bound_j(counter_period_s: float, avg_power_w: float) -> float:
    """Worst-case error in joules of a counter-difference energy reading.

    One counter update period (s) of uncertainty at each window edge, at ``avg_power_w``
    watts: ``2 × counter_period_s × avg_power_w``.
    """
    if counter_period_s < 0 or avg_power_w < 0:
        raise ValueError(f"period ({counter_period_s} s) and power ({avg_power_w} W) must be ≥ 0")
    return 2.0 * counter_period_s * avg_power_w


def relative_bound(bound_j: float | None, energy_j: float | None) -> float | None:
    """The bound as a fraction of the measured energy (dimensionless; 0.01 = 1%).

    None when either is unknown or the energy is ≤ 0 J (a fraction of nothing is meaningless).
    """
    if bound_j is None or energy_j is None or energy_j <= 0:
        return None
    return bound_j / energy_j


def min_window_s_for(counter_period_s: float, target_relative_bound: float = 0.005) -> float:
    """Shortest window in seconds whose relative quantisation bound is ≤ the target.

    Derivation: at average power P (W) over a window of T (s) the energy is P·T (J) and the
    bound is 2·period·P (J), so the relative bound is 2·period·P / (P·T) = 2·period / T.
    Power cancels, so ``2·period / T ≤ target`` gives ``T ≥ 2·period / target``.
    Example: a 0.1 s counter period and a 0.5% target need T ≥ 0.2 / 0.005 = 40 s.

    The default target of 0.5% keeps the counter's contribution well under the 1% at which
    ``judge_window`` flags a window as short.
    """
    if counter_period_s <= 0:
        raise ValueError(f"counter_period_s must be > 0, got {counter_period_s}")
    if target_relative_bound <= 0:
        raise ValueError(f"target_relative_bound must be > 0, got {target_relative_bound}")
    return 2.0 * counter_period_s / target_relative_bound


def repetitions_needed(single_run_s: float, min_window_s: float, min_iterations: int) -> int:
    """Repetitions of a workload taking ``single_run_s`` seconds for one window.

    The smallest count ≥ 1 and ≥ ``min_iterations`` whose total time (count × single_run_s,
    in s) is at least ``min_window_s`` seconds. E.g. a 3 s run and a 40 s window → 14.
    """
    if single_run_s <= 0:
        raise ValueError(f"single_run_s must be > 0, got {single_run_s}")
    for_window = 0
    if min_window_s > 0:
        for_window = math.ceil(min_window_s / single_run_s - _RATIO_EPSILON)
    return max(1, min_iterations, for_window)


@dataclass(frozen=True)
class WindowVerdict:
    """How far one window's energy can be trusted.

    ``bound_j``: worst-case counter quantisation error in joules (None if not computable).
    ``relative_bound``: that bound as a fraction of the window's energy (0.01 = 1%).
    ``flags``: machine-readable warnings, empty when the window is fine:
    ``short_window`` (relative bound above the threshold), ``energy_unavailable``,
    ``counter_period_unknown``, ``invalid_duration`` (duration ≤ 0 s),
    ``energy_not_positive`` (energy ≤ 0 J, which a real load never gives).
    """

    bound_j: float | None
    relative_bound: float | None
    flags: list[str] = field(default_factory=list)


def judge_window(
    energy_j: float | None,
    duration_s: float,
    counter_period_s: float | None,
    flag_threshold: float = 0.01,
    sampled_power_w: float | None = None,
) -> WindowVerdict:
    """Judge a window of ``energy_j`` joules over ``duration_s`` seconds.

    ``counter_period_s`` is the energy counter's update period in seconds (None if unknown).
    ``flag_threshold`` is the relative bound (fraction; default 1%) above which the window
    is flagged ``short_window``; a bound exactly at the threshold is not flagged.
    ``sampled_power_w``: the mean of power samples over the window (W), when a sampler ran.
    The bound uses the larger of it and the counter's average power, so a window that read
    0 J (shorter than one counter update) still gets a bound from the power actually drawn.
    Relative to the energy the bound is ``2 × period / duration`` whatever the power, so
    ``short_window`` is decided from the durations alone (also when the energy is 0).
    """
    flags: list[str] = []
    if energy_j is None:
        flags.append("energy_unavailable")
    elif energy_j <= 0:
        flags.append("energy_not_positive")
    if duration_s <= 0:
        flags.append("invalid_duration")
    if counter_period_s is None:
        flags.append("counter_period_unknown")
    if energy_j is None or duration_s <= 0 or counter_period_s is None:
        return WindowVerdict(bound_j=None, relative_bound=None, flags=flags)
    avg_power_w = max(max(0.0, energy_j) / duration_s, sampled_power_w or 0.0)
    bound_j = quantisation_bound_j(counter_period_s, avg_power_w)
    rel = relative_bound(bound_j, energy_j)
    if 2 * counter_period_s / duration_s > flag_threshold:
        flags.append("short_window")
    return WindowVerdict(bound_j=bound_j, relative_bound=rel, flags=flags)
