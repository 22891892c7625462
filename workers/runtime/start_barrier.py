"""The start barrier of a data-parallel measurement, as the outermost window edge.

Each GPU worker of a data-parallel experiment loads its model and warms up on its own
clock. Its measured window must not open before every other worker is ready too, or the
workers' windows would cover different spans of time and their throughputs could not be
added. ``StartBarrier.begin`` therefore reports phase ``armed`` and blocks until the
coordinator's ``Go`` (sent once every shard is armed) sets ``go``; the inner edges (the
GPU energy counters among them) begin only after that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lem.workers.engines.base import BackendError

POLL_INTERVAL_S = 0.01


class StartBarrier:
    """Blocks ``begin`` until ``go`` is set; raises BackendError on ``cancel`` or after
    ``timeout_s`` seconds. ``opened_at_unix_s`` is when it let the window open. Reports
    phase ``armed`` on arrival and ``measuring`` on leaving."""

    def __init__(
        self,
        go: threading.Event,
        cancel: threading.Event,
        on_phase: Callable[[str, str], None],
        timeout_s: float,
    ) -> None:
        self.go = go
        self.cancel = cancel
        self.on_phase = on_phase
        self.timeout_s = timeout_s
        self.opened_at_unix_s: float | None = None

    def begin(self) -> None:
        self.on_phase("armed", "waiting for the other shards")
        deadline_s = time.monotonic() + self.timeout_s
        while not self.go.wait(POLL_INTERVAL_S):
            if self.cancel.is_set():
                raise BackendError("cancelled while waiting at the start barrier")
            if time.monotonic() > deadline_s:
                raise BackendError(
                    f"no Go within {self.timeout_s:g} s of arming: another shard never got ready"
                )
        self.opened_at_unix_s = time.time()
        self.on_phase("measuring", "every shard armed: window open")

    def end(self) -> None:
        pass
