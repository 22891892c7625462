"""SIGINT and SIGTERM during a campaign: raised as ``Interrupted`` while running, ignored
while cleaning up (a second Ctrl-C must not leave workers or a half-written state)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lem.coordinator.early_interrupt import take_early_interrupt
from lem.protocol.errors import LemError


class Interrupted(LemError):
    """SIGINT or SIGTERM arrived."""


@contextmanager
def interrupts_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if take_early_interrupt():  # one CPython swallowed before this handling existed
            raise Interrupted(signal.SIGINT.name)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Let cleanup finish: a second Ctrl-C must not leave workers or a half-written state."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
