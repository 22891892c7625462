"""The steady-state window rule (``lem.protocol.steady_state``) on synthetic traces with
known answers: a deterministic ramp, Poisson arrivals below and above capacity, a fixed
concurrency, bursty gamma arrivals and runs too short to have a steady part."""

from __future__ import annotations

import random

import pytest

from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import load_above_capacity
from lem.protocol.steady_state import (
    FRACTION,
    GRID_POINTS,
    in_flight_steps,
    min_steady_s,
    steady_window,
    weighted_median,
)

Trace = list[tuple[float, float, float]]  # (scheduled s, started s, finished s)


def open_loop(gaps_s: list[float], service_s: float, slots: int) -> Trace:
    """Requests arriving after ``gaps_s``, served FIFO by ``slots`` servers in
    ``service_s`` s each."""
    free_s = [0.0] * slots
    trace: Trace = []
    t_s = 0.0
    for gap_s in gaps_s:
        slot = min(range(slots), key=free_s.__getitem__)
        begin_s = max(t_s, free_s[slot])
        free_s[slot] = begin_s + service_s
        trace.append((t_s, begin_s, begin_s + service_s))
        t_s += gap_s
    return trace


def intervals(trace: Trace) -> list[tuple[float, float]]:
    """Client side: a request is in flight from its send (its scheduled time) to its end."""
    return [(sent_s, finished_s) for sent_s, _, finished_s in trace]


def records(trace: Trace) -> list[RequestRecord]:
    return [
        RequestRecord(
            index=i, pass_index=0, batch_index=None, input_tokens=8, output_tokens=16,
            scheduled_ms=1000 * sent_s, start_ms=1000 * sent_s,
            queue_ms=1000 * (begin_s - sent_s), ttft_ms=1000 * (begin_s - sent_s) + 10,
            e2e_ms=1000 * (finished_s - sent_s), tpot_ms=1.0, itl_ms_f32le=b"",
        )
        for i, (sent_s, begin_s, finished_s) in enumerate(trace)
    ]  # fmt: skip


def test_in_flight_count_and_its_time_weighted_median() -> None:
    steps = in_flight_steps([(0.0, 3.0), (1.0, 2.0), (1.0, 4.0)])
    assert steps == [(0.0, 1), (1.0, 3), (2.0, 2), (3.0, 1), (4.0, 0)]
    # over [0, 4]: 1 for 2 s (0–1, 3–4), 3 for 1 s, 2 for 1 s: half the time is at ≤ 1
    assert weighted_median(steps, 0.0, 4.0) == 1.0
    assert weighted_median(steps, 0.5, 3.0) == 2.0  # 0.5 s at 1, 1 s at 3, 1 s at 2


def test_deterministic_ramp_opens_where_the_smoothed_count_crosses_the_fraction() -> None:
    # a request every 0.1 s for 1 s each, unlimited slots: n rises 1..10 over the first
    # second, holds 10, and falls after the last send (19.9 s)
    trace = open_loop([0.1] * 200, 1.0, slots=1000)
    window = steady_window(intervals(trace), trace[-1][2], closed_loop=False)
    assert window.level == 10
    # centred 1 s mean of n(u) ≈ 10u: 5(1 − x²) + 10x = 8 at x = t − 0.5, x ≈ 0.367; the
    # steps (n = ⌊10u⌋ + 1 ≥ 10u) reach it a little earlier
    assert 0.75 <= (window.start_s or 0) <= 0.87
    # the mean stops at the drain (the last send), where n is still 10: it closes there
    assert window.end_s == pytest.approx(19.9, abs=19.9 / GRID_POINTS)
    assert window.unavailable_reason is None


def test_poisson_below_capacity_holds_littles_level_until_the_last_arrival() -> None:
    rng = random.Random(1)
    rate, service_s = 10.0, 0.8
    trace = open_loop([rng.expovariate(rate) for _ in range(600)], service_s, slots=64)
    assert not load_above_capacity(records(trace))
    window = steady_window(intervals(trace), trace[-1][2], closed_loop=False, min_duration_s=30)
    last_send_s = trace[-1][0]
    assert window.level is not None and abs(window.level - rate * service_s) <= 1.5
    assert window.start_s is not None and window.end_s is not None
    assert 0.0 < window.start_s <= service_s  # n is stationary one service time in
    assert last_send_s - service_s <= window.end_s <= last_send_s
    assert window.requests_sent >= 0.9 * len(trace)


def test_poisson_above_capacity_has_no_steady_state() -> None:
    rng = random.Random(2)
    trace = open_loop([rng.expovariate(8.0) for _ in range(200)], 1.0, slots=4)  # 4/s served
    growing = load_above_capacity(records(trace))
    assert growing
    window = steady_window(intervals(trace), trace[-1][2], False, load_growing=growing)
    assert window.start_s is None and window.end_s is None
    assert "above capacity" in (window.unavailable_reason or "")


def test_closed_loop_opens_at_once_and_closes_at_the_first_finish_after_the_last_send() -> None:
    concurrency, count = 4, 40
    rng = random.Random(3)
    free_s = [0.0] * concurrency
    pairs = []
    for _ in range(count):
        slot = min(range(concurrency), key=free_s.__getitem__)
        sent_s = free_s[slot]
        free_s[slot] = sent_s + rng.uniform(0.8, 1.2)
        pairs.append((sent_s, free_s[slot]))
    window = steady_window(pairs, max(f for _, f in pairs), closed_loop=True)
    assert window.level == concurrency
    assert window.start_s == 0.0  # all four are sent at 0
    # the last send replaces the (count − concurrency)-th finish; the next finish, the
    # (count − concurrency + 1)-th, is the first not replaced
    expected_end_s = sorted(f for _, f in pairs)[count - concurrency]
    assert window.end_s == pytest.approx(expected_end_s, abs=expected_end_s / GRID_POINTS)


def test_bursty_gamma_arrivals_still_find_a_window_before_the_drain() -> None:
    rng = random.Random(4)
    rate, shape, service_s = 10.0, 0.25, 0.8  # gaps' CV = 1/√shape = 2
    gaps_s = [rng.gammavariate(shape, 1 / (rate * shape)) for _ in range(800)]
    trace = open_loop(gaps_s, service_s, slots=256)
    assert not load_above_capacity(records(trace))
    window = steady_window(intervals(trace), trace[-1][2], closed_loop=False)
    assert window.start_s is not None and window.end_s is not None and window.level is not None
    assert window.end_s <= trace[-1][0]
    mean_in_flight = rate * service_s  # Little's law, whatever the arrival process
    assert FRACTION * mean_in_flight / 2 <= window.level <= 1.5 * mean_in_flight
    assert window.end_s - window.start_s >= 0.8 * trace[-1][0]


def test_too_few_requests_or_too_short_a_steady_part_fall_back_with_a_reason() -> None:
    trace = open_loop([0.1] * 6, 1.0, slots=100)
    few = steady_window(intervals(trace), trace[-1][2], closed_loop=False)
    assert few.start_s is None and "6 request(s)" in (few.unavailable_reason or "")
    trace = open_loop([0.1] * 40, 1.0, slots=100)  # ~3 s steady
    short = steady_window(intervals(trace), trace[-1][2], closed_loop=False, min_duration_s=10)
    assert short.start_s is None and short.level == 10
    assert "shorter than its energy bound needs" in (short.unavailable_reason or "")
    burst = steady_window([(0.0, 1.0 + i) for i in range(10)], 11.0, closed_loop=False)
    assert burst.start_s is None and "at once" in (burst.unavailable_reason or "")


def test_min_steady_s_keeps_the_relative_bound_at_the_target() -> None:
    # edges known to 0.2 s each: 2 × 0.2 / T ≤ 1% ⇒ T ≥ 40 s
    assert min_steady_s(0.2, 0.01) == pytest.approx(40.0)
    assert min_steady_s(0.0, 0.01) == 0.0


def test_a_light_load_idle_most_of_the_time_takes_its_mean_as_the_level() -> None:
    rng = random.Random(5)
    rate, service_s = 1.0, 0.2  # 0.2 requests in flight on average: the median is 0
    trace = open_loop([rng.expovariate(rate) for _ in range(300)], service_s, slots=8)
    window = steady_window(intervals(trace), trace[-1][2], closed_loop=False)
    assert window.level is not None and abs(window.level - rate * service_s) <= 0.05
    assert window.start_s is not None and window.end_s is not None
    assert window.start_s <= trace[1][0] and window.end_s >= 0.9 * trace[-1][0]
