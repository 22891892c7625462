"""Parallel lanes: several experiments at once on one node, on disjoint GPU sets.

A lane is a thread. Lanes pull (experiment, cycle) pairs from the campaign's shared,
ordered iterator under one lock and, still holding it, acquire the pair's GPUs from the
allocator (allocator.py), so pairs start in the campaign's order and an experiment that
needs every GPU waits its turn instead of being overtaken. Each lane then runs the cycle on
the worker of its GPU set (``CampaignRunner._run_cycle``, retries included) and gives the
GPUs back. Signals reach only the main thread: it waits on the lanes in short slices
(``wait``), so ``Interrupted`` is raised there; then ``stop`` keeps lanes from taking
work, the runner stops every worker, ``join`` waits for the lanes to finish and, once the
runner has stopped the workers started meanwhile too, ``close`` ends the threads.

On a cluster, a cycle whose node left (``GpusLost``) goes back to the front of the queue and
its GPUs out of the pool: another lane runs it on a live node, its attempts counted on.

A lane's thread outlives its work until ``close``: a worker's parent-death signal
(``PR_SET_PDEATHSIG``) follows the thread that launched it, and another lane may still be
using a worker this lane started, or the runner may still have to stop it gracefully.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog

from lem.coordinator.execution.allocator import AllocationStopped, GpuAllocator, GpusLost
from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.interrupts import raise_if_interrupted
from lem.coordinator.planning.campaign import PlannedExperiment

if TYPE_CHECKING:
    from lem.protocol.results import GpuInfo

log = structlog.get_logger("lem.lanes")

# Runs one cycle on the given GPUs; True measured, False failed, None stopped (interrupt).
CycleRunner = Callable[[PlannedExperiment, int, GpuAssignment], bool | None]
CycleDone = Callable[[PlannedExperiment, int, bool, float], None]  # ok, duration_s
Preferred = Callable[[PlannedExperiment], list[GpuAssignment]]

JOIN_SLICE_S = 0.1  # how often the main thread wakes while waiting on lanes (s)


def gpu_pool(gpus: list[GpuInfo], allowed_indices: set[int] | None) -> list[str]:
    """UUIDs of the GPUs lem may use (``--gpus``), lowest NVML index first."""
    usable = [g for g in gpus if allowed_indices is None or g.index in allowed_indices]
    return [g.uuid for g in sorted(usable, key=lambda g: g.index)]


def lane_count(
    allocator: GpuAllocator, gpu_counts: list[int], pending: int, max_parallel: int | None
) -> int:
    """Lanes to run: how many pending experiments fit at once, at most ``max_parallel``."""
    fit = allocator.lanes(gpu_counts)
    return max(1, min(fit, pending, max_parallel if max_parallel is not None else fit))


class LanePool:
    """``lanes`` threads running ``pairs`` with ``run_cycle``; see the module docstring."""

    def __init__(
        self,
        lanes: int,
        pairs: Iterator[tuple[PlannedExperiment, int]],
        gpu_count: Callable[[PlannedExperiment], int],
        allocator: GpuAllocator,
        run_cycle: CycleRunner,
        preferred: Preferred,
        on_cycle_done: CycleDone | None = None,
    ) -> None:
        self._pairs = pairs
        self._again: list[tuple[PlannedExperiment, int]] = []  # pairs whose node left
        self._pairs_lock = threading.Lock()
        self._gpu_count = gpu_count
        self._allocator = allocator
        self._run_cycle = run_cycle
        self._preferred = preferred
        self._on_cycle_done = on_cycle_done
        self.stopping = threading.Event()
        self._released = threading.Event()  # set by ``close``: parked lanes may end
        self._finished = 0  # lanes done with their work (parked until ``close``)
        self._finished_cv = threading.Condition()
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._lane, name=f"lem-lane-{i}", daemon=True)
            for i in range(lanes)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait(self) -> None:
        """Main thread: wait until every lane is done with its work, in short slices (signal
        handlers run between them); re-raise the first error a lane hit."""
        while not self._all_finished(JOIN_SLICE_S):
            raise_if_interrupted()  # one whose first raise CPython swallowed
        if self._errors:
            raise self._errors[0]

    def stop(self) -> None:
        """Lanes take no more work; lanes waiting for GPUs return at once."""
        self.stopping.set()
        self._allocator.stop()

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` (s) for the lanes to finish their work (after ``stop``);
        their threads stay until ``close``."""
        deadline_s = time.monotonic() + timeout_s
        while not self._all_finished(max(0.0, deadline_s - time.monotonic())):
            if time.monotonic() >= deadline_s:
                return

    def close(self, timeout_s: float = 5.0) -> None:
        """End the lanes' threads (after the runner has stopped every worker)."""
        self._released.set()
        deadline_s = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline_s - time.monotonic()))

    def _all_finished(self, timeout_s: float) -> bool:
        with self._finished_cv:
            return self._finished_cv.wait_for(
                lambda: self._finished >= len(self._threads), timeout_s
            )

    def _next(self) -> tuple[PlannedExperiment, int, GpuAssignment] | None:
        with self._pairs_lock:
            if self.stopping.is_set():
                return None
            item = self._again.pop(0) if self._again else next(self._pairs, None)
            if item is None:
                return None
            exp, cycle = item
            count = self._gpu_count(exp)
            try:
                assignment = self._allocator.acquire(count, self._preferred(exp))
            except AllocationStopped:
                return None
            return exp, cycle, assignment

    def _lane(self) -> None:
        try:
            while (item := self._next()) is not None:
                exp, cycle, assignment = item
                started_s = time.monotonic()
                try:
                    ok = self._run_cycle(exp, cycle, assignment)
                except GpusLost as lost:
                    self._allocator.lose(lost.assignment)
                    with self._pairs_lock:
                        self._again.append((exp, cycle))
                    log.warning("node lost: the cycle runs again elsewhere", cycle=cycle,
                                experiment=exp.name, gpus=lost.assignment.key)  # fmt: skip
                    continue
                finally:
                    self._allocator.release(assignment)
                if ok is not None and self._on_cycle_done is not None:
                    self._on_cycle_done(exp, cycle, ok, time.monotonic() - started_s)
        except BaseException as exc:  # a bug: stop the others, report it on the main thread
            log.exception("lane failed", lane=threading.current_thread().name)
            self._errors.append(exc)
            self.stop()
        finally:
            with self._finished_cv:
                self._finished += 1
                self._finished_cv.notify_all()
            self._released.wait()  # see the module docstring
