"""GPU power limits and locked clocks during a campaign (``gpu:`` in an experiment;
issue 19), set by the coordinator through NVML and always given back.

Before lem changes anything on a GPU it writes the GPU's original values to the ledger
beside the store (``gpu-settings.json``, ``protocol/devices/gpu_settings.py``), durably.
A cycle whose experiment asks for settings gets them applied before it is sent to the
worker (so before its warmup), then ``settle_s`` of waiting; a cycle that asks for none on a
GPU lem had changed gets the original values back first. When the campaign ends — finished,
failed, interrupted by Ctrl-C, with a worker killed on the way — every GPU gets its original
values back and the ledger entry goes. If the coordinator itself is killed, the next
``lem campaign``/``run``/``resume`` on that store (or ``lem doctor --restore-gpu-settings``)
restores what the ledger lists for a coordinator no longer alive, before anything else.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog

from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.planning.campaign import CampaignPlan
from lem.coordinator.planning.dispatch_plan import GpuRequest, gpu_request
from lem.coordinator.planning.grid import LazyExperiments
from lem.protocol.devices.gpu_settings import (
    GpuSettings,
    Originals,
    SettingsLedger,
    apply,
    ledger_beside,
    read_originals,
    restore,
    setting_problem,
)
from lem.protocol.gpu_config import GpuConfig

log = structlog.get_logger("lem.gpu")


def settings_of(gpu: GpuConfig) -> GpuSettings:
    return GpuSettings(gpu.power_limit_w, gpu.sm_clocks_mhz, gpu.memory_clocks_mhz)


def restore_leftovers(store_path: Path) -> list[str]:
    """Give back what a killed coordinator left set on this host's GPUs (one line each)."""
    path = ledger_beside(store_path)
    if not path.is_file():
        return []
    return SettingsLedger(path).restore_leftovers()


class GpuControl:
    """The GPU settings of one campaign run (see the module docstring). Lanes share it."""

    def __init__(self, store_path: Path) -> None:
        self._ledger = SettingsLedger(ledger_beside(store_path))
        self._applied: dict[str, GpuSettings] = {}  # what lem set now, per GPU UUID
        self._originals: dict[str, Originals] = {}
        self._lock = threading.Lock()

    def ensure(self, assignment: GpuAssignment, gpu: GpuConfig) -> None:
        """Give ``assignment``'s GPUs the settings ``gpu`` asks (originals where it asks
        none), waiting ``settle_s`` after a change."""
        wanted = settings_of(gpu)
        changed = False
        with self._lock:
            for uuid in assignment.gpu_uuids:
                if self._applied.get(uuid, GpuSettings()) == wanted:
                    continue
                if uuid in self._originals:  # back to the start, then what is asked
                    restore(self._originals[uuid])
                    self._applied.pop(uuid, None)
                    changed = True
                if not wanted.empty:
                    self._remember(uuid, wanted)
                    applied = apply(uuid, wanted)
                    self._applied[uuid] = wanted
                    log.info("gpu settings applied", gpu=uuid, asked=str(wanted),
                             power_limit_w=applied.power_limit_w)  # fmt: skip
                    changed = True
        if changed and gpu.settle_s > 0:
            time.sleep(gpu.settle_s)

    def _remember(self, uuid: str, wanted: GpuSettings) -> None:
        """The GPU's originals in the ledger, durably, before its first change (a clock
        lem now locks for the first time adds its reset to them)."""
        known = self._originals.get(uuid)
        fresh = read_originals(uuid, wanted)
        if known is not None:
            fresh = Originals(
                uuid, known.power_limit_w,
                known.reset_sm_clocks or fresh.reset_sm_clocks,
                known.reset_memory_clocks or fresh.reset_memory_clocks,
            )  # fmt: skip
            if fresh == known:
                return
            self._ledger.clear([uuid])
        self._ledger.record([fresh], os.getpid())
        self._originals[uuid] = fresh

    def restore_all(self) -> list[str]:
        """Every GPU lem changed back to its originals; the ledger cleared for each. Lines
        for the GPUs that could not be restored (their ledger entry stays)."""
        problems: list[str] = []
        with self._lock:
            for uuid, originals in list(self._originals.items()):
                try:
                    restore(originals)
                except Exception as exc:  # the rest still get theirs back
                    problems.append(f"{uuid}: {exc}")
                    continue
                self._ledger.clear([uuid])
                del self._originals[uuid]
                self._applied.pop(uuid, None)
                log.info("gpu settings restored", gpu=uuid)
        return problems


def plan_problem(plan: CampaignPlan, assignments: dict[GpuRequest, GpuAssignment]) -> str | None:
    """The first GPU setting of ``plan`` that cannot be applied to the GPUs it would get
    (``field: problem``), or None: checked before anything runs or is stored."""
    experiments = plan.experiments
    covering = (
        experiments.covering(("gpu", "device", "gpu_count"))
        if isinstance(experiments, LazyExperiments)
        else iter(experiments)
    )
    seen: set[tuple[GpuSettings, GpuRequest]] = set()
    for exp in covering:
        wanted, request = settings_of(exp.config.gpu), gpu_request(exp)
        if wanted.empty or (wanted, request) in seen:
            continue
        seen.add((wanted, request))
        for uuid in assignments[request].gpu_uuids:
            problem = setting_problem(uuid, wanted)
            if problem is not None:
                field = _field_of(wanted)
                return f"experiment {exp.name!r}: {field}: {problem}"
    return None


def _field_of(wanted: GpuSettings) -> str:
    for name in ("power_limit_w", "sm_clocks_mhz", "memory_clocks_mhz"):
        if getattr(wanted, name) is not None:
            return f"gpu.{name}"
    return "gpu"
