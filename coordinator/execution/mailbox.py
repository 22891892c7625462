"""One worker's events as the coordinator's hub files them (hub.py), for one waiting thread.

The hub's I/O thread puts the worker's events in arrival order, and ``Lost`` once the
worker is gone (its process exited, it fell silent, it was stopped, or the hub closed).
``Lost`` stays at the end: every later ``get`` returns it at once. The liveness fields
below the queue belong to the I/O thread.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from lem.coordinator.execution.launcher import WorkerProcess
from lem.protocol.messages import Event


@dataclass(frozen=True)
class Lost:
    """The worker is gone; ``reason`` says how."""

    reason: str


class Mailbox:
    """A worker's event queue and the hub's liveness record of it. Times in seconds."""

    def __init__(
        self, worker_id: str, heartbeat_interval_s: float, heartbeat_timeout_s: float
    ) -> None:
        self.worker_id = worker_id
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._queue: queue.SimpleQueue[Event | Lost] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._lost = threading.Event()
        self._lost_reason: str | None = None
        self.exit_expected = False  # set by ``expect_exit``
        # The I/O thread's: the process it watches, when it last heard the worker (any
        # event; the heartbeat deadline applies once it has) and when it beats next.
        self.process: WorkerProcess | None = None
        self.heard = False
        self.last_heard_s = time.monotonic()
        self.next_beat_s = time.monotonic()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    def expect_exit(self) -> None:
        """The worker was told to stop (or to go, or it reported a fatal error): its exit
        is no loss — the hub records it as ``stopped (…)`` and logs no warning."""
        self.exit_expected = True

    def put(self, event: Event) -> None:
        """File an event (the I/O thread); none is filed after ``Lost``."""
        with self._lock:
            if not self._lost.is_set():
                self._queue.put(event)

    def lose(self, reason: str) -> bool:
        """End the mailbox with ``Lost(reason)``; False if it had ended already (the first
        reason stands). Any thread."""
        with self._lock:
            if self._lost.is_set():
                return False
            self._lost_reason = reason
            self._lost.set()
            self._queue.put(Lost(reason))
            return True

    def get(self, timeout_s: float) -> Event | Lost | None:
        """The next event, ``Lost`` (at once, once it is at the head), or None when
        ``timeout_s`` passes first."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if isinstance(item, Lost):
            self._queue.put(item)  # stays at the end for the next look
        return item

    def wait_lost(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the worker to be lost; whether it is."""
        return self._lost.wait(max(0.0, timeout_s))
