"""SIGINT and SIGTERM during a campaign: raised as ``Interrupted`` while running, ignored
while cleaning up (a second Ctrl-C must not leave workers or a half-written state).

CPython swallows an exception raised where it cannot propagate ("Exception ignored in …"):
a signal that lands in a ``__del__``, a weakref callback or an at-fork callback (logging's
``_releaseLock`` runs after each fork of a worker's launch) would be lost, and the campaign
would run on. So the handler also remembers the signal, says nothing of the swallowed
exception, and the main thread's waits (``raise_if_interrupted``, called between short
slices) raise it again.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lem.coordinator.early_interrupt import take_early_interrupt
from lem.protocol.errors import LemError

CHECK_SLICE_S = 0.25  # how long a main-thread wait goes between looks for a lost signal (s)
_arrived: list[str] = []  # signals taken while interrupts raise; emptied when that ends


class Interrupted(LemError):
    """SIGINT or SIGTERM arrived."""


def raise_if_interrupted() -> None:
    """Main thread, inside ``interrupts_raise``: raise ``Interrupted`` if a signal arrived
    (its first raise may have been swallowed). Other threads: nothing (signals are the main
    thread's)."""
    if _arrived and threading.current_thread() is threading.main_thread():
        raise Interrupted(_arrived[0])


@contextmanager
def interrupts_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        _arrived.append(name)
        raise Interrupted(name)

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        """A swallowed ``Interrupted`` is remembered, not printed as a traceback."""
        if isinstance(unraisable.exc_value, Interrupted) and _arrived:
            return
        hook(unraisable)

    hook = sys.unraisablehook
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = quiet
    try:
        if take_early_interrupt():  # one CPython swallowed before this handling existed
            raise Interrupted(signal.SIGINT.name)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sys.unraisablehook = hook
        _arrived.clear()


@contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Let cleanup finish: a second Ctrl-C must not leave workers or a half-written state."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
