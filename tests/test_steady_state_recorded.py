"""The steady-state rule on request timelines recorded by lem's server mode on CPU
(tests/data/server_timelines.md): each window is checked against what the trace itself
says — Little's law, the concurrency, the first finish after the last send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import load_above_capacity
from lem.protocol.steady_state import GRID_POINTS, steady_window

TRACES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "server_timelines.json").read_text()
)["traces"]


def trace(name: str) -> tuple[list[RequestRecord], list[tuple[float, float]], float]:
    """A recorded trace's request records, (sent s, finished s) pairs, duration (s)."""
    raw = TRACES[name]
    records = [
        RequestRecord(
            index=i, pass_index=0, batch_index=None, input_tokens=64, output_tokens=tokens,
            scheduled_ms=scheduled, start_ms=start, queue_ms=queue, ttft_ms=0.0, e2e_ms=e2e,
            tpot_ms=None, itl_ms_f32le=b"",
        )
        for i, (scheduled, start, queue, e2e, tokens) in enumerate(raw["rows"])
    ]  # fmt: skip
    pairs = [(r.start_ms / 1000, (r.start_ms + r.e2e_ms) / 1000) for r in records]
    return records, pairs, raw["duration_ms"] / 1000


def test_light_poisson_holds_littles_level_to_the_last_arrival() -> None:
    records, pairs, duration_s = trace("poisson-20")
    assert not load_above_capacity(records)
    window = steady_window(pairs, duration_s, closed_loop=False)
    assert window.start_s is not None and window.end_s is not None
    last_send_s = max(s for s, _ in pairs)
    mean_in_flight = sum(f - s for s, f in pairs) / last_send_s  # Little: λ × mean time
    assert window.level is not None and abs(window.level - mean_in_flight) <= 1.0
    first_finish_s = min(f for _, f in pairs)
    assert window.start_s <= first_finish_s  # light load: steady from the first request on
    assert window.end_s == pytest.approx(last_send_s, abs=last_send_s / GRID_POINTS)


def test_poisson_above_capacity_is_recognised_and_has_no_steady_window() -> None:
    records, pairs, duration_s = trace("poisson-100")
    growing = load_above_capacity(records)
    assert growing
    window = steady_window(pairs, duration_s, closed_loop=False, load_growing=growing)
    assert window.start_s is None and "above capacity" in (window.unavailable_reason or "")


def test_recorded_concurrency_is_steady_at_its_concurrency_until_the_drain() -> None:
    _records, pairs, duration_s = trace("concurrency-8")
    concurrency = TRACES["concurrency-8"]["workload"]["concurrency"]
    window = steady_window(pairs, duration_s, closed_loop=True)
    assert window.level == concurrency
    assert window.start_s == 0.0
    last_send_s = max(s for s, _ in pairs)
    drain_s = min(f for _, f in pairs if f > last_send_s)
    assert window.end_s == pytest.approx(drain_s, abs=drain_s / GRID_POINTS)
    assert window.requests_sent == len(pairs)
