"""The steady-state window of a server-mode run: pure logic on the request timeline.

In server mode the measured window spans the whole run: requests ramp up from none in
flight, hold a level, then drain once the last one has been sent. The ramp and the drain
run the engine below its steady load, so their joules per token dilute (or inflate) the
steady figure. ``steady_window`` finds the part of the run at the steady level, from each
request's send and finish times (client side, s since the window opened):

1. ``n(t)``: requests in flight at ``t`` (sent, not finished); a step function.
2. The drain edge ``t_drain``: open loop (arrival times), the last send: no request
   arrives after it, so ``n`` can only fall. Closed loop (fixed concurrency), the first
   finish after the last send: from there on a finished request is not replaced.
3. The level ``L``: the time-weighted median of ``n`` over the middle half of
   [first send, ``t_drain``] (ramp and drain fall outside it); its time-weighted mean
   when the median is 0 (a light load, idle more than half the time).
4. ``m(t)``: the mean of ``n`` over [t − w/2, t + w/2] clipped to [0, ``t_drain``], with
   ``w`` the median request duration: a request's lifetime is the time scale on which
   ``n`` can change, and the mean over one smooths the count's Poisson noise. The drain
   itself never enters the mean (it is known to fall).
5. The window opens at the first ``t`` with ``m(t) ≥ FRACTION × L`` and closes at the last
   ``t ≤ t_drain`` with ``m(t) ≥ FRACTION × L`` (evaluated on a grid of ``GRID_POINTS``).
6. No steady window (``unavailable_reason``) when the load grew all run (the caller's
   ``load_above_capacity`` judgement: no level to find), with fewer than
   ``MIN_REQUESTS`` requests, or when the window is shorter than ``min_duration_s`` (the
   length at which its energy bound stays within the caller's target) or holds fewer
   than ``MIN_REQUESTS`` sends.

See docs/methodology.md, "Steady-state windows in server mode".
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

FRACTION = 0.8  # the smoothed in-flight count must reach this share of the level
MIN_REQUESTS = 8  # requests (in the run, and sent inside the window) to find a level from
GRID_POINTS = 4000  # evaluation points of the smoothed count over the run


@dataclass(frozen=True)
class SteadyWindow:
    """The steady part of a run: ``start_s``/``end_s`` (s since the window opened),
    ``level`` (the in-flight level, requests), ``requests_sent`` inside it; or, when there
    is none, ``start_s``/``end_s`` None and ``unavailable_reason``."""

    start_s: float | None
    end_s: float | None
    level: float | None
    requests_sent: int = 0
    unavailable_reason: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.start_s is None or self.end_s is None:
            return None
        return self.end_s - self.start_s


def in_flight_steps(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, int]]:
    """``n(t)`` as steps (t s, count from t on), sorted, one per distinct event time."""
    events: dict[float, int] = {}
    for sent_s, finished_s in intervals:
        events[sent_s] = events.get(sent_s, 0) + 1
        events[finished_s] = events.get(finished_s, 0) - 1
    steps: list[tuple[float, int]] = []
    count = 0
    for t_s in sorted(events):
        count += events[t_s]
        steps.append((t_s, count))
    return steps


def weighted_median(steps: Sequence[tuple[float, int]], begin_s: float, end_s: float) -> float:
    """The time-weighted median of the step function over [begin, end] (its value that
    half the time is at or below)."""
    spans: dict[int, float] = {}
    times = [t for t, _ in steps]
    at = bisect.bisect_right(times, begin_s) - 1
    t_s, value = begin_s, steps[at][1] if at >= 0 else 0
    for next_t, next_value in steps[at + 1 :]:
        if next_t >= end_s:
            break
        spans[value] = spans.get(value, 0.0) + next_t - t_s
        t_s, value = next_t, next_value
    spans[value] = spans.get(value, 0.0) + end_s - t_s
    total, seen = sum(spans.values()), 0.0
    for value in sorted(spans):
        seen += spans[value]
        if seen >= total / 2:
            return float(value)
    return float(max(spans))


class _Integral:
    """The running integral of a step function (request·s), for window means."""

    def __init__(self, steps: Sequence[tuple[float, int]]) -> None:
        self.times = [t for t, _ in steps]
        self.values = [v for _, v in steps]
        self.area = [0.0]
        for i in range(1, len(steps)):
            self.area.append(
                self.area[-1] + self.values[i - 1] * (self.times[i] - self.times[i - 1])
            )

    def __call__(self, t_s: float) -> float:
        i = bisect.bisect_right(self.times, t_s) - 1
        if i < 0:
            return 0.0
        return self.area[i] + self.values[i] * (t_s - self.times[i])

    def mean(self, begin_s: float, end_s: float) -> float:
        return (self(end_s) - self(begin_s)) / (end_s - begin_s)


def steady_window(
    intervals: Sequence[tuple[float, float]],
    duration_s: float,
    closed_loop: bool,
    min_duration_s: float = 0.0,
    load_growing: bool = False,
) -> SteadyWindow:
    """The steady window of a run of ``duration_s`` s whose requests were in flight over
    ``intervals`` ((sent s, finished s) since the window opened); ``closed_loop`` for a
    fixed concurrency, else arrivals by a process. ``min_duration_s``: the shortest
    window worth having (s). ``load_growing``: the run's ``load_above_capacity``
    judgement. The rule is the module docstring's."""
    if load_growing:
        return _none("load above capacity: requests in flight grew through the run, no level")
    if len(intervals) < MIN_REQUESTS:
        return _none(f"{len(intervals)} request(s); a steady level needs {MIN_REQUESTS}")
    sends = sorted(s for s, _ in intervals)
    last_send_s = sends[-1]
    drain_s = last_send_s
    if closed_loop:
        drain_s = min((f for _, f in intervals if f > last_send_s), default=last_send_s)
    drain_s = min(drain_s, duration_s)
    span_s = drain_s - sends[0]
    if span_s <= 0:
        return _none("every request was sent at once: no steady part before the drain")
    steps = in_flight_steps(intervals)
    middle_s = (sends[0] + span_s / 4, sends[0] + 3 * span_s / 4)
    level = weighted_median(steps, *middle_s)
    width_s = max(_median([f - s for s, f in intervals]), 1e-9)
    integral = _Integral(steps)
    if level < 1:  # idle over half the time (light load): the mean is the level
        level = integral.mean(*middle_s)
    if level <= 0:
        return _none("no request was in flight through the middle of the run")
    threshold = FRACTION * level
    above: list[float] = []
    for k in range(GRID_POINTS + 1):
        t_s = drain_s * k / GRID_POINTS
        begin_s, end_s = max(0.0, t_s - width_s / 2), min(drain_s, t_s + width_s / 2)
        if end_s > begin_s and integral.mean(begin_s, end_s) >= threshold:
            above.append(t_s)
    if not above or above[-1] <= above[0]:
        return _none(f"the in-flight count never held {FRACTION:g} × its level ({level:g})")
    start_s, end_s = above[0], above[-1]
    sent = bisect.bisect_right(sends, end_s) - bisect.bisect_left(sends, start_s)
    if end_s - start_s < min_duration_s:
        why = "the steady part is shorter than its energy bound needs (lem docs methodology)"
        return SteadyWindow(None, None, level, sent, why)
    if sent < MIN_REQUESTS:
        why = f"{sent} request(s) sent in the steady part; {MIN_REQUESTS} needed"
        return SteadyWindow(None, None, level, sent, why)
    return SteadyWindow(start_s, end_s, level, sent)


def _none(reason: str) -> SteadyWindow:
    return SteadyWindow(None, None, None, 0, reason)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def steady_bound_j(edge_uncertainty_s: float, avg_power_w: float) -> float:
    """Worst case (J) of an energy read between two edges, each known to within
    ``edge_uncertainty_s`` s of counter, at ``avg_power_w`` W."""
    return 2.0 * edge_uncertainty_s * max(0.0, avg_power_w)


def min_steady_s(edge_uncertainty_s: float, target_relative_bound: float) -> float:
    """The shortest steady window (s) whose relative bound is ≤ the target: the bound is
    2·u·P over an energy of P·T, so T ≥ 2·u / target (power cancels)."""
    if edge_uncertainty_s <= 0 or target_relative_bound <= 0:
        return 0.0
    return 2.0 * edge_uncertainty_s / target_relative_bound
