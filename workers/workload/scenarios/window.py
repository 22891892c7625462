"""The measured window's edges: the one module where lem opens and closes a window.

A window is opened right after the engine's device work is done (``synchronize``: a
CUDA synchronisation for an engine that computes in this process; for one whose GPU
work runs in its own process, no request in flight) and closed right after the next
synchronisation, so that the energy counters and the clock bracket exactly the measured
work. A window whose work raised (a cancel, a failure) is never closed: it is dropped,
not measured. ``Edges`` makes several windows one (the start barrier, the process watch,
RAPL, the clock, the GPU counters innermost), so that they open and close together.
The model load has a window of its own (``loaded_between``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from lem.workers.engines.base import LoadInfo, MeasurementWindow


@dataclass
class WindowClock:
    """When the window opened (perf_counter s) and, once closed, how long it lasted (s)."""

    started_s: float
    duration_s: float = 0.0


@contextmanager
def measured_window(
    window: MeasurementWindow, synchronize: Callable[[], None]
) -> Iterator[WindowClock]:
    """Open ``window`` right after ``synchronize()``, time the ``with`` body on
    ``perf_counter``, then ``synchronize()``, stop the clock and close the window. When
    the body raises, the window is left open (dropped): ``end`` is not called."""
    synchronize()
    window.begin()
    clock = WindowClock(time.perf_counter())
    yield clock
    synchronize()
    clock.duration_s = time.perf_counter() - clock.started_s
    window.end()


def loaded_between(window: MeasurementWindow | None, load: Callable[[], LoadInfo]) -> LoadInfo:
    """``load()`` with ``window`` opened right before it and closed right after it when it
    loaded (not when it reused the kept model: then the window is dropped). Its energy is
    the load's, apart from the measured window's; the opening costs one counter read per
    GPU, as whether the load will reuse is not known before it."""
    if window is not None:
        window.begin()
    info = load()
    if window is not None and not info.model_reused:
        window.end()
    return info


class Edges:
    """Several windows as one: begins in order, ends in reverse order."""

    def __init__(self, windows: Sequence[MeasurementWindow]) -> None:
        self.windows = list(windows)

    def begin(self) -> None:
        for window in self.windows:
            window.begin()

    def end(self) -> None:
        for window in reversed(self.windows):
            window.end()
