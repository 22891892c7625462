"""Foreign compute processes on the measured GPUs: energy they draw is silently ours.

NVML's total-energy counter is the whole device's. Any other process computing on the GPU
during a window adds its energy to ours, so lem lists the compute processes of every
measured GPU at both window edges and flags the figure ``contaminated`` when one is not
this worker. NVML reports host PIDs; inside a container this worker's own PID may not
appear. Then one process on the GPU is taken to be us, and any further one is foreign.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class ProcessLister(Protocol):
    def compute_pids(self, uuid: str) -> set[int] | str: ...


def foreign_pids(pids: set[int], own_pid: int) -> set[int]:
    """The PIDs on a GPU that may not be this worker's (see the module docstring).

    Our PID visible: every other one. Not visible (a PID namespace): none when at most one
    process computes (that one is us), else all of them — one is us, and we cannot tell
    which, but at least one is foreign.
    """
    if own_pid in pids:
        return pids - {own_pid}
    if len(pids) <= 1:
        return set()
    return set(pids)


@dataclass
class ProcessWatch:
    """Lists compute processes on ``gpu_uuids`` at window begin and end. ``companions``:
    the PIDs that count as this worker's own besides it (a server the engine started),
    asked at each look."""

    lister: ProcessLister
    gpu_uuids: list[str]
    own_pid: int = field(default_factory=os.getpid)
    companions: Callable[[], set[int]] | None = None
    foreign: dict[str, set[int]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def begin(self) -> None:
        self._look()

    def end(self) -> None:
        self._look()

    def _look(self) -> None:
        for uuid in self.gpu_uuids:
            pids = self.lister.compute_pids(uuid)
            if isinstance(pids, str):
                self.unreadable.append(pids)
                continue
            others = foreign_pids(pids, self.own_pid)
            if others and self.companions is not None:
                others = others - self.companions()
            if others:
                self.foreign.setdefault(uuid, set()).update(others)

    def flags(self) -> list[str]:
        flags = []
        if self.foreign:
            flags.append("contaminated")
        if self.unreadable:
            flags.append("processes_unknown")
        return flags

    def describe(self) -> str:
        return "; ".join(f"{uuid}: PIDs {sorted(p)}" for uuid, p in sorted(self.foreign.items()))
