"""The feeding loop of server mode: send requests into a continuously batching engine by a
seeded arrival process (open loop) or at a fixed concurrency (closed loop), then wait for
every one to finish. Backend-agnostic: an engine adapter only submits and reports finishes.

Open loop: request i is sent at ``started_s`` + its arrival time, by sleeping until then on
this (the feeding) thread; how late the send was is left to the engine's own timestamp of
the request. Requests are sent until ``num_requests`` have been sent and the next arrival
lies at or beyond ``min_window_s``: the arrival schedule alone decides how many, so a seed
names one request count. Closed loop: ``concurrency`` requests are kept in flight, the next
sent as soon as one finishes, until ``num_requests`` have been sent and ``min_window_s``
has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Protocol

from lem.workers.engines.base import Cancelled
from lem.workers.workload.arrivals import ConcurrencyLimit

POLL_S = 0.05  # how long one wait for finished requests blocks at most (s)


class ServerEngine(Protocol):
    """What the feeding loop needs of an engine."""

    def submit(self, index: int, scheduled_s: float | None) -> None:
        """Send request ``index`` (0, 1, … in order) now; ``scheduled_s`` is when the arrival
        process meant it to be sent (perf_counter s), None in closed loop."""
        ...

    def wait_finished(self, timeout_s: float) -> int:
        """Block up to ``timeout_s`` for requests to finish; how many finished since the
        last call. Raises when the engine failed."""
        ...


def _sleep_until(deadline_s: float, cancel: threading.Event) -> None:
    while (remaining_s := deadline_s - time.perf_counter()) > 0:
        if cancel.is_set():
            raise Cancelled("cancelled during a measured window")
        time.sleep(min(remaining_s, 0.1))


def _drain(engine: ServerEngine, in_flight: int, cancel: threading.Event) -> None:
    while in_flight > 0:
        if cancel.is_set():
            raise Cancelled("cancelled during a measured window")
        in_flight -= engine.wait_finished(POLL_S)


def feed(
    engine: ServerEngine,
    plan: Iterable[float] | ConcurrencyLimit,
    num_requests: int,
    min_window_s: float,
    started_s: float,
    cancel: threading.Event,
) -> int:
    """Send requests by ``plan`` (arrival times in s from ``started_s``, a perf_counter
    time, or a concurrency limit) and wait until all have finished; how many were sent."""
    if isinstance(plan, ConcurrencyLimit):
        return _closed_loop(engine, plan.concurrency, num_requests, min_window_s, started_s,
                            cancel)  # fmt: skip
    sent = 0
    for arrival_s in plan:
        if sent >= num_requests and arrival_s >= min_window_s:
            break
        deadline_s = started_s + arrival_s
        _sleep_until(deadline_s, cancel)
        engine.submit(sent, deadline_s)
        sent += 1
    _drain(engine, sent, cancel)
    return sent


def _closed_loop(
    engine: ServerEngine,
    concurrency: int,
    num_requests: int,
    min_window_s: float,
    started_s: float,
    cancel: threading.Event,
) -> int:
    sent = in_flight = 0
    while True:
        while in_flight < concurrency and (
            sent < num_requests or time.perf_counter() - started_s < min_window_s
        ):
            engine.submit(sent, None)
            sent += 1
            in_flight += 1
        if in_flight == 0:
            return sent
        if cancel.is_set():
            raise Cancelled("cancelled during a measured window")
        in_flight -= engine.wait_finished(POLL_S)
