"""``execution/interrupts.py``: a signal whose ``Interrupted`` CPython swallowed is raised
again by the main thread's waits, silently, and forgotten once the handling ends."""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lem.coordinator.execution.allocator import GpuAllocator
from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.interrupts import (
    CHECK_SLICE_S,
    Interrupted,
    interrupts_raise,
    raise_if_interrupted,
)
from lem.coordinator.execution.lanes import LanePool
from lem.coordinator.execution.mailbox import Mailbox
from lem.coordinator.execution.supervisor import Supervisor
from lem.coordinator.planning.campaign import PlannedExperiment, plan_campaign
from lem.coordinator.planning.dispatch_plan import planned_cycles
from tests.test_parallel_lanes import UUIDS, campaign_file


def _swallow_a_sigint() -> None:
    """SIGINT delivered inside a weakref callback, where CPython cannot propagate it."""

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
    del thing
    assert ref() is None


def test_a_swallowed_interrupt_is_silent_and_raised_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with interrupts_raise():
        _swallow_a_sigint()  # no exception here: CPython swallowed it
        with pytest.raises(Interrupted, match="SIGINT"):
            raise_if_interrupted()
    assert "Exception ignored" not in capsys.readouterr().err
    raise_if_interrupted()  # forgotten once the handling ended


def test_only_the_main_thread_raises_it() -> None:
    seen: list[BaseException] = []

    def look() -> None:
        try:
            raise_if_interrupted()
        except BaseException as exc:
            seen.append(exc)

    with interrupts_raise():
        _swallow_a_sigint()
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
        with pytest.raises(Interrupted):
            raise_if_interrupted()
    assert seen == []


def test_a_wait_on_a_silent_worker_raises_it_within_a_slice() -> None:
    handle: Any = SimpleNamespace(mailbox=Mailbox("w", 1.0, 10.0))
    with interrupts_raise():
        _swallow_a_sigint()
        started_s = time.monotonic()
        with pytest.raises(Interrupted):
            Supervisor._next_event(None, handle, time.monotonic() + 30.0)  # type: ignore[arg-type]
        assert time.monotonic() - started_s < 2 * CHECK_SLICE_S + 0.5


def test_a_wait_still_ends_at_its_deadline() -> None:
    handle: Any = SimpleNamespace(mailbox=Mailbox("w", 1.0, 10.0))
    started_s = time.monotonic()
    assert Supervisor._next_event(None, handle, time.monotonic() + 0.6) is None  # type: ignore[arg-type]
    assert 0.55 <= time.monotonic() - started_s < 1.5


def test_the_wait_on_lanes_raises_it(tmp_path: Path) -> None:
    release = threading.Event()

    def run_cycle(_exp: PlannedExperiment, _cycle: int, _gpus: GpuAssignment) -> bool:
        release.wait(10.0)  # busy until the test lets go
        return True

    pairs = iter(planned_cycles(plan_campaign(campaign_file(tmp_path))))
    pool = LanePool(2, pairs, lambda _: 1, GpuAllocator(list(UUIDS)), run_cycle, lambda _: [])
    pool.start()
    try:
        with interrupts_raise():
            _swallow_a_sigint()
            with pytest.raises(Interrupted):
                pool.wait()
    finally:
        pool.stop()
        release.set()
        pool.join(5.0)
        pool.close()
