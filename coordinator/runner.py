"""Running a planned campaign: assign GPUs, keep long-lived workers, store every outcome.

Experiments that share a load key run back to back, so a worker loads the model once.
A worker that dies is replaced for the next experiment; the failed cycle is recorded with
the reason. SIGINT/SIGTERM stop dispatching, shut workers down (killing what does not
exit in time) and mark the campaign interrupted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from lem.coordinator.campaign import CampaignPlan, PlannedExperiment
from lem.coordinator.config_loader import ConfigError
from lem.coordinator.gpus import GpuAssignment, GpuAssignmentError, assign_gpus
from lem.coordinator.hub import Hub
from lem.coordinator.launcher import LocalProcessLauncher, WorkerLauncher, WorkerSpec
from lem.coordinator.store import Store, new_id
from lem.coordinator.supervisor import Failure, Supervisor, WorkerHandle, WorkerStartError
from lem.protocol.messages import Progress, Run
from lem.protocol.results import Measurement
from lem.workers.nvml import inventory

log = structlog.get_logger("lem.campaign")


@dataclass(frozen=True)
class RunOptions:
    """How to run: where results go, which GPUs lem may use, transport and timeouts (s)."""

    store_path: Path
    allowed_gpu_indices: set[int] | None = None
    endpoint: str | None = None
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    handshake_timeout_s: float = 120.0
    shutdown_grace_s: float = 10.0


@dataclass
class CampaignOutcome:
    campaign_id: str
    measured: int = 0
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    interrupted: bool = False


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def assign_all(plan: CampaignPlan, allowed: set[int] | None) -> dict[int, GpuAssignment]:
    """GPU assignment of every experiment, decided before anything is stored."""
    inv = inventory()
    assignments: dict[int, GpuAssignment] = {}
    for exp in plan.experiments:
        try:
            assignments[exp.position] = assign_gpus(
                exp.config.device, exp.config.gpu_count, inv.gpus, allowed, inv.unavailable_reason
            )
        except GpuAssignmentError as exc:
            field_name = "device" if exp.config.device == "cuda" else "gpu_count"
            raise ConfigError(
                plan.source_path, f"experiment {exp.name!r}: {field_name}", str(exc)
            ) from exc
    return assignments


def ordered(plan: CampaignPlan) -> Iterator[PlannedExperiment]:
    """Experiments in plan order, one at a time. Planning already keeps experiments that
    share a load key together (load-key axes vary slowest), so nothing is sorted here;
    ``lem.coordinator.campaign.plan_schedule`` gives the campaign's (position, cycle) order."""
    return iter(plan.experiments)


ProgressHook = Callable[[PlannedExperiment, int, Progress, WorkerHandle], None]
CycleDoneHook = Callable[[PlannedExperiment, int, bool, float], None]  # ok, duration_s


class CampaignRunner:
    """Runs one plan against one store with one hub and supervisor.

    ``on_progress`` is called with (experiment, cycle, progress event, worker) at each phase;
    ``on_cycle_done`` with (experiment, cycle, ok, duration_s) after each cycle is stored.
    """

    def __init__(
        self,
        plan: CampaignPlan,
        store: Store,
        options: RunOptions,
        launcher: WorkerLauncher | None = None,
        on_progress: ProgressHook | None = None,
        on_cycle_done: CycleDoneHook | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.options = options
        self.launcher = launcher or LocalProcessLauncher()
        self.on_progress = on_progress
        self.on_cycle_done = on_cycle_done
        self._workers: dict[tuple[str, str], WorkerHandle] = {}
        self._worker_count = 0

    def run(self) -> CampaignOutcome:
        assignments = assign_all(self.plan, self.options.allowed_gpu_indices)
        ids = {exp.position: new_id("e") for exp in self.plan.experiments}
        campaign_id = self.store.create_campaign(
            self.plan.name,
            str(self.plan.source_path),
            self.plan.source_hash,
            self.plan.cycles,
            [(ids[e.position], e.config, e.load_key) for e in self.plan.experiments],
        )
        outcome = CampaignOutcome(campaign_id)
        run_dir = self.options.store_path.parent / "runs" / campaign_id
        hub = Hub(self.options.endpoint)
        supervisor = Supervisor(
            hub,
            self.launcher,
            self.options.heartbeat_interval_s,
            self.options.heartbeat_timeout_s,
            self.options.handshake_timeout_s,
        )
        log.info(
            "campaign started", campaign=campaign_id, experiments=len(ids), cycles=self.plan.cycles
        )
        status = "finished"
        try:
            with _interrupts_raise():
                for exp in ordered(self.plan):
                    for cycle in range(self.plan.cycles):
                        started_s = time.monotonic()
                        ok = self._run_cycle(
                            supervisor,
                            exp,
                            ids[exp.position],
                            cycle,
                            assignments[exp.position],
                            run_dir,
                            outcome,
                        )
                        if self.on_cycle_done is not None:
                            self.on_cycle_done(exp, cycle, ok, time.monotonic() - started_s)
        except Interrupted as exc:
            status = "interrupted"
            outcome.interrupted = True
            log.warning("interrupted: stopping workers", signal=str(exc))
        finally:
            with _ignoring_interrupts():
                supervisor.stop_all("campaign " + status, self.options.shutdown_grace_s)
                hub.close()
                if status == "finished" and outcome.failures:
                    status = "failed"
                self.store.finish_campaign(campaign_id, status)
        return outcome

    def _worker_for(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        assignment: GpuAssignment,
        run_dir: Path,
    ) -> WorkerHandle:
        key = (exp.config.backend, assignment.key)
        handle = self._workers.get(key)
        if handle is not None and handle.alive:
            return handle
        self._worker_count += 1
        worker_id = f"w{self._worker_count}-{exp.config.backend}-{assignment.key[:12]}"
        spec = WorkerSpec(
            worker_id=worker_id,
            backend=exp.config.backend,
            endpoint=supervisor.hub.endpoint,
            assignment=assignment,
            journal_path=run_dir / "journals" / f"{worker_id}.jsonl",
            log_path=run_dir / "logs" / f"{worker_id}.log",
            handshake_timeout_s=self.options.handshake_timeout_s,
        )
        handle = supervisor.start_worker(spec)
        self._workers[key] = handle
        return handle

    def _run_cycle(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        experiment_id: str,
        cycle: int,
        assignment: GpuAssignment,
        run_dir: Path,
        outcome: CampaignOutcome,
    ) -> bool:
        """One cycle, stored as a measurement or a failure; True when measured."""
        bound = log.bind(experiment=exp.name, cycle=cycle)
        try:
            handle = self._worker_for(supervisor, exp, assignment, run_dir)
        except WorkerStartError as exc:
            result: Measurement | Failure = Failure(str(exc), True)
            worker_id = "-"
        else:
            worker_id = handle.spec.worker_id

            def on_progress(event: Progress) -> None:
                bound.info(event.phase, detail=event.detail or None)
                if self.on_progress is not None:
                    self.on_progress(exp, cycle, event, handle)

            result = supervisor.run(
                handle,
                Run(experiment_id=experiment_id, cycle=cycle, config=exp.config),
                on_progress,
            )
        if isinstance(result, Measurement):
            self.store.record_measurement(result)
            outcome.measured += 1
            bound.info(
                "measured",
                tok_per_s=round(result.output_tokens_per_s, 1),
                energy_j=result.energy_j,
                energy_reason=result.energy_unavailable_reason,
            )
        else:
            self.store.record_failure(experiment_id, cycle, result.reason, worker_id)
            outcome.failures.append((exp.name, cycle, result.reason))
            bound.error("cycle failed", reason=result.reason)
        return isinstance(result, Measurement)


@contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """Let cleanup finish: a second Ctrl-C must not leave workers or a half-written state."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
