"""Disjoint GPU sets for concurrent experiments on one node, or on the nodes of a cluster
(``node_of``: a set never spans two nodes; GPUs of a node that left are ``lose``-t).

The pool is the allowed inventory (``--gpus`` limits it). ``acquire(count)`` blocks until
``count`` GPUs are free and hands them out as a ``GpuAssignment``; ``release`` gives them
back. Requests are served first come, first served, so an experiment that needs every GPU
is not starved by a stream of one-GPU experiments. Among free GPU sets, one that already
has a live worker (``preferred``) is taken first, so a loaded model is used again.
CPU-only experiments (``count == 0``) take the one CPU slot: they run one at a time, next
to GPU experiments at most.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

from lem.coordinator.execution.gpus import CPU_ONLY, GpuAssignment
from lem.protocol.errors import LemError


class AllocationStopped(LemError):
    """``stop()`` was called while waiting: the campaign is being interrupted."""


class GpusLost(LemError):
    """A cycle's GPUs left the pool (their node left the cluster): run it elsewhere."""

    def __init__(self, assignment: GpuAssignment) -> None:
        super().__init__(f"GPUs {assignment.key} left the cluster")
        self.assignment = assignment


class NoGpusLeft(LemError):
    """No node left in the pool holds the GPUs an experiment needs."""


class GpuAllocator:
    """Hands out disjoint subsets of ``gpu_uuids`` (index order: lowest first)."""

    def __init__(self, gpu_uuids: Iterable[str], node_of: dict[str, str] | None = None) -> None:
        self.gpu_uuids: tuple[str, ...] = tuple(gpu_uuids)
        self._node_of = node_of or {}  # GPU UUID → node; absent: one node
        self._free: set[str] = set(self.gpu_uuids)
        self._cpu_free = True
        self._cv = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0  # the oldest waiting ticket; only it may be granted
        self._abandoned: set[int] = set()  # tickets whose waiter gave up while queued
        self._stopped = False

    def lanes(self, counts: Iterable[int]) -> int:
        """How many experiments can run at once: disjoint sets of the smallest GPU count
        asked for (≥ 1), plus a lane for CPU experiments when there are GPU ones too."""
        asked = list(counts)
        gpu_counts = [c for c in asked if c > 0]
        if not gpu_counts:
            return 1
        per_node = self._per_node(self.gpu_uuids)
        lanes = max(1, sum(len(gpus) // min(gpu_counts) for gpus in per_node.values()))
        return lanes + (1 if 0 in asked else 0)

    def _per_node(self, uuids: Iterable[str]) -> dict[str, list[str]]:
        """``uuids`` by node, in order."""
        groups: dict[str, list[str]] = {}
        for uuid in uuids:
            groups.setdefault(self._node_of.get(uuid, ""), []).append(uuid)
        return groups

    def largest_node(self) -> int:
        """The most GPUs one node of the pool holds."""
        return max((len(g) for g in self._per_node(self.gpu_uuids).values()), default=0)

    def acquire(
        self, count: int, preferred: Iterable[GpuAssignment] = (), timeout_s: float | None = None
    ) -> GpuAssignment:
        """Block until ``count`` GPUs are free (0: the CPU slot), then take them.

        Raises ``ValueError`` if the pool can never hold ``count`` GPUs,
        ``AllocationStopped`` once ``stop()`` is called and ``TimeoutError`` after
        ``timeout_s`` seconds (None: no limit).
        """
        if count > self.largest_node():
            raise ValueError(f"needs {count} GPU(s) on one node; lem may use {self.largest_node()}")
        with self._cv:
            ticket = next(self._tickets)
            try:
                while True:
                    if self._stopped:
                        raise AllocationStopped("campaign stopping")
                    if count > self.largest_node():
                        raise NoGpusLeft(f"no node with {count} GPU(s) is left in the cluster")
                    if ticket == self._serving:
                        taken = self._take(count, list(preferred))
                        if taken is not None:
                            return taken
                    if not self._cv.wait(timeout_s):
                        raise TimeoutError(f"no {count} free GPU(s) within {timeout_s} s")
            finally:
                if ticket == self._serving:
                    self._serving += 1
                else:  # gave up while queued: let the queue move past this ticket later
                    self._abandoned.add(ticket)
                self._skip_abandoned()
                self._cv.notify_all()

    def _skip_abandoned(self) -> None:
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1

    def _take(self, count: int, preferred: list[GpuAssignment]) -> GpuAssignment | None:
        if count == 0:
            if not self._cpu_free:
                return None
            self._cpu_free = False
            return CPU_ONLY
        chosen: tuple[str, ...] | None = None
        for assignment in preferred:
            uuids = assignment.gpu_uuids
            if len(uuids) == count and all(u in self._free for u in uuids):
                chosen = uuids
                break
        if chosen is None:
            free = [u for u in self.gpu_uuids if u in self._free]
            fitting = [g for g in self._per_node(free).values() if len(g) >= count]
            if not fitting:
                return None
            chosen = tuple(fitting[0][:count])
        self._free.difference_update(chosen)
        return GpuAssignment(chosen)

    def release(self, assignment: GpuAssignment) -> None:
        """Give back what ``acquire`` handed out."""
        with self._cv:
            if assignment.gpu_uuids:  # lost GPUs stay out of the pool
                self._free.update(u for u in assignment.gpu_uuids if u in self.gpu_uuids)
            else:
                self._cpu_free = True
            self._cv.notify_all()

    def lose(self, assignment: GpuAssignment) -> None:
        """``assignment``'s GPUs left (their node left the cluster): never hand them out
        again; waiters that can no longer be served get ``NoGpusLeft``."""
        with self._cv:
            gone = set(assignment.gpu_uuids)
            if self._node_of:  # the whole node left, not only these GPUs
                nodes = {self._node_of.get(u) for u in gone}
                gone |= {u for u in self.gpu_uuids if self._node_of.get(u) in nodes}
            self.gpu_uuids = tuple(u for u in self.gpu_uuids if u not in gone)
            self._free.difference_update(gone)
            self._cv.notify_all()

    def stop(self) -> None:
        """Wake every waiting ``acquire`` with ``AllocationStopped``."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
