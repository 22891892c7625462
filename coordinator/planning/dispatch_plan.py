"""Which experiments run in which order, and on which GPUs when run one at a time:
the run order of a plan's (experiment, cycle) pairs and the up-front check of every GPU
request, both without expanding a lazy plan."""

from __future__ import annotations

from collections.abc import Iterator

from lem.coordinator.execution.gpus import GpuAssignment, GpuAssignmentError, assign_gpus
from lem.coordinator.planning.campaign import CampaignPlan, PlannedExperiment, plan_schedule
from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.planning.grid import LazyExperiments
from lem.protocol.devices.nvml import Inventory, inventory
from lem.protocol.results import GpuInfo

GpuRequest = tuple[str, int]  # (device, gpu_count) of an experiment


def gpu_request(exp: PlannedExperiment) -> GpuRequest:
    """What ``exp`` asks of the GPUs: its device and how many."""
    return exp.config.device, exp.config.gpu_count


def assign_all(
    plan: CampaignPlan, allowed: set[int] | None, gpus: list[GpuInfo] | None = None
) -> dict[GpuRequest, GpuAssignment]:
    """The sequential GPU assignment of every GPU request the plan makes, decided before
    anything is stored: a lazy plan is checked through a few experiments that cover every
    (device, gpu_count) it takes, so a million-point grid starts at once. ``gpus``: a
    cluster's GPUs (default: this host's)."""
    inv = inventory() if gpus is None else Inventory(gpus, None, None, None)
    assignments: dict[GpuRequest, GpuAssignment] = {}
    experiments = plan.experiments
    covering = (
        experiments.covering(("device", "gpu_count"))
        if isinstance(experiments, LazyExperiments)
        else iter(experiments)
    )
    for exp in covering:
        if gpu_request(exp) in assignments:
            continue
        try:
            assignments[gpu_request(exp)] = assign_gpus(
                exp.config.device, exp.config.gpu_count, inv.gpus, allowed, inv.unavailable_reason
            )
        except GpuAssignmentError as exc:
            field_name = "device" if exp.config.device == "cuda" else "gpu_count"
            raise ConfigError(
                plan.source_path, f"experiment {exp.name!r}: {field_name}", str(exc)
            ) from exc
    return assignments


def planned_cycles(plan: CampaignPlan) -> Iterator[tuple[PlannedExperiment, int]]:
    """Every planned (experiment, cycle) in the campaign's ``order`` (grouped: each
    experiment's cycles together; interleaved: cycle after cycle; shuffled: each cycle in
    its own seeded order). An experiment is built once per run of pairs that share it."""
    last: PlannedExperiment | None = None
    for position, cycle in plan_schedule(plan):
        if last is None or last.position != position:
            last = plan.experiments[position]
        yield last, cycle
