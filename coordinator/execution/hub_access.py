"""One thread at a time on the hub: ZeroMQ sockets (and the poller) are not thread-safe.

Parallel lanes (lanes.py) share one Supervisor and so one Hub. Every use of the hub —
sending, polling, watching a sentinel — holds the one access token. Taking it is
re-entrant (a pump that marks a worker dead unwatches its sentinel). A thread that wants
to *send* goes before threads that only want to *pump*: a lane waiting for its events
need not pump itself, since whoever pumps files every worker's events into its inbox and
wakes the waiters (``notify_all``) when done. So a lane that keeps pumping cannot starve
a lane that needs to send its Run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class HubAccess:
    """The hub's access token; see the module's docstring."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._senders_waiting = 0

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the token (to send, watch, unwatch, mark dead), before any waiting pumper."""
        me = threading.get_ident()
        with self._cv:
            if self._owner != me:
                self._senders_waiting += 1
                try:
                    while self._owner is not None:
                        self._cv.wait()
                finally:
                    self._senders_waiting -= 1
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            self._give_back()

    def try_pump(self, wait_s: float) -> bool:
        """Take the token to pump, True; or, when another thread holds it or a sender
        waits, wait up to ``wait_s`` (s) for that thread's pump to end and return False."""
        me = threading.get_ident()
        with self._cv:
            if self._owner == me or (self._owner is None and not self._senders_waiting):
                self._owner = me
                self._depth += 1
                return True
            self._cv.wait(max(0.0, wait_s))
            return False

    def release_pump(self) -> None:
        """Give back the token taken by ``try_pump``; wakes every waiting lane."""
        self._give_back()

    def _give_back(self) -> None:
        with self._cv:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cv.notify_all()
