"""One (experiment, cycle) of a running campaign: its worker, its attempts up to
``max_attempts`` and what is stored of each; a load sweep's point resolved first
(sweeps.py). ``CampaignRunner`` (runner.py) is a ``CycleRuns``: it owns the campaign, its
lanes and its signals; this owns one cycle at a time, from the main thread or a lane.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from lem.coordinator.execution.allocator import GpusLost
from lem.coordinator.execution.data_parallel import attempt_data_parallel, is_data_parallel
from lem.coordinator.execution.gpu_control import GpuControl
from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.launcher import WorkerLauncher, WorkerSpec, resolve_interpreter
from lem.coordinator.execution.supervisor import Failure, Supervisor, WorkerHandle, WorkerStartError
from lem.coordinator.execution.sweeps import Skip, SweepPoints, resolve
from lem.coordinator.planning.campaign import CampaignPlan, PlannedExperiment
from lem.coordinator.store.results_store import Store, new_id
from lem.protocol.config import ExperimentConfig
from lem.protocol.messages import Progress, Run
from lem.protocol.results import Measurement

log = structlog.get_logger("lem.campaign")


@dataclass(frozen=True)
class RunOptions:
    """How to run: where results go, which GPUs lem may use, transport and timeouts (s).

    ``max_attempts``: attempts a cycle gets when its worker dies, hangs or times out, or
    reports a retryable error (a started server that did not start).
    ``cancel_grace_s``: how long a timed-out worker has to answer Cancel before it is
    killed. ``shutdown_grace_s``: how long workers have to exit on an interrupt.
    ``max_parallel``: most experiments run at once on disjoint GPU sets (None: as many
    as fit; 1: one at a time). ``cluster``: run the workers on a Ray cluster's nodes
    (ray_cluster.py) instead of this host.
    """

    store_path: Path
    allowed_gpu_indices: set[int] | None = None
    endpoint: str | None = None
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    handshake_timeout_s: float = 120.0
    shutdown_grace_s: float = 10.0
    cancel_grace_s: float = 10.0
    max_attempts: int = 2
    max_parallel: int | None = None
    cluster: str | None = None  # a Ray cluster's address (ray://HOST:PORT, HOST:PORT, auto)


@dataclass
class CampaignOutcome:
    """What one run (or resume) did: cycles measured now, results recovered from worker
    journals, (experiment name, cycle, reason with attempts) of failed cycles."""

    campaign_id: str
    measured: int = 0
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    interrupted: bool = False
    ingested: int = 0
    already_done: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # sweep points not run


ProgressHook = Callable[[PlannedExperiment, int, Progress, WorkerHandle], None]
CycleDoneHook = Callable[[PlannedExperiment, int, bool, float], None]  # ok, duration_s
StartedHook = Callable[[str, Path], None]  # campaign id, its run folder


class CycleRuns:
    """The per-cycle half of ``CampaignRunner`` (see the module docstring)."""

    plan: CampaignPlan
    store: Store
    options: RunOptions
    launcher: WorkerLauncher
    on_progress: ProgressHook | None
    _workers: dict[tuple[str, str], WorkerHandle]
    _worker_count: int
    _lock: threading.Lock
    _points: SweepPoints
    _gpu: GpuControl | None

    def _worker_for(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        assignment: GpuAssignment,
        directory: Path,
    ) -> WorkerHandle:
        key = (exp.config.backend, assignment.key)
        with self._lock:  # a lane holds its GPU set, so no other lane starts this key's worker
            handle = self._workers.get(key)
            if handle is not None and handle.alive:
                return handle
            self._worker_count += 1
            worker_id = f"w{self._worker_count}-{exp.config.backend}-{assignment.key[:12]}"
            # Workers on any of these GPUs are idle (the GPUs are ours now): stop them, so no
            # model of theirs holds GPU memory or shows up beside ours in the measurement.
            overlapping = {k: h for k, h in self._workers.items() if h.alive and k != key}
            overlapping = {
                k: h
                for k, h in overlapping.items()
                if set(h.spec.assignment.gpu_uuids) & set(assignment.gpu_uuids)
            }
            for k in overlapping:
                del self._workers[k]
        for idle in overlapping.values():
            log.info("stopping idle worker", worker=idle.spec.worker_id, for_worker=worker_id)
            supervisor.stop_worker(
                idle, f"its GPUs go to {worker_id}", self.options.shutdown_grace_s
            )
        spec = WorkerSpec(
            worker_id=worker_id,
            backend=exp.config.backend,
            endpoint=supervisor.hub.endpoint,
            assignment=assignment,
            journal_path=directory / "journals" / f"{worker_id}.jsonl",
            log_path=directory / "logs" / f"{worker_id}.log",
            handshake_timeout_s=self.options.handshake_timeout_s,
            python=resolve_interpreter(exp.config.backend),
            curve=supervisor.hub.worker_keys,
        )
        handle = supervisor.start_worker(spec)
        with self._lock:
            self._workers[key] = handle
        return handle

    def _run_cycle(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        cycle: int,
        assignment: GpuAssignment,
        directory: Path,
        outcome: CampaignOutcome,
        stopping: threading.Event | None = None,
    ) -> bool | None:
        """Run one (experiment, cycle) until ok, a non-retryable failure or the last attempt;
        True when it was measured. None: a sweep point not run now (``outcome.skipped``), or
        in a lane ``stopping`` was set (an interrupt) and the attempt's failure is left for
        ``interrupt_running`` to mark interrupted."""
        try:
            config = self._sweep_config(exp, cycle, outcome.campaign_id, stopping)
            if isinstance(config, Skip):
                if stopping is None or not stopping.is_set():
                    with self._lock:
                        outcome.skipped.append((exp.name, cycle, config.reason))
                    log.info("sweep point not run", experiment=exp.name, cycle=cycle,
                             reason=config.reason)  # fmt: skip
                return None
            return self._run_config(
                supervisor, exp, config, cycle, assignment, directory, outcome, stopping
            )
        finally:
            self._points.finished(exp.position, cycle)

    def _sweep_config(
        self, exp: PlannedExperiment, cycle: int, campaign_id: str,
        stopping: threading.Event | None,
    ) -> ExperimentConfig | Skip:  # fmt: skip
        """``exp``'s config for this cycle: a sweep point's rate resolved (sweeps.py)."""

        def experiment_at(position: int) -> tuple[str, ExperimentConfig] | None:
            with self._lock:
                return self.store.experiment_at(campaign_id, position)

        def ok_measurements(experiment_id: str) -> list[Measurement]:
            with self._lock:
                records = self.store.experiment_measurements(experiment_id)
            return [r.measurement for r in records if r.measurement is not None]

        return resolve(
            exp, cycle, self._points, experiment_at, ok_measurements, stopping,
            self.options.max_attempts,
        )  # fmt: skip

    def _run_config(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        config: ExperimentConfig,
        cycle: int,
        assignment: GpuAssignment,
        directory: Path,
        outcome: CampaignOutcome,
        stopping: threading.Event | None,
    ) -> bool | None:
        campaign_id = outcome.campaign_id
        if self._gpu is not None:  # its power limit and clocks before its warmup
            self._gpu.ensure(assignment, config.gpu)
        with self._lock:
            experiment_id = self.store.ensure_experiment(
                campaign_id, exp.position, new_id("e"), config, exp.load_key, exp.provenance
            )
        bound = log.bind(experiment=exp.name, cycle=cycle)
        for attempt in range(1, self.options.max_attempts + 1):
            if stopping is not None and stopping.is_set():
                return None
            with self._lock:
                attempts = self.store.start_attempt(campaign_id, exp.position, cycle, experiment_id)
            result, worker_id = self._attempt(
                supervisor, exp, config, experiment_id, cycle, assignment, directory
            )
            if isinstance(result, Measurement):
                with self._lock:
                    self.store.record_measurement(result, attempts)
                    outcome.measured += 1
                bound.info(
                    "measured",
                    tok_per_s=round(result.work.output_tokens_per_s, 1),
                    energy_j=result.energy.energy_j,
                    energy_reason=result.energy.energy_unavailable_reason,
                    attempts=attempts,
                )
                return True
            if stopping is not None and stopping.is_set():
                return None  # stopped by the interrupt: not a failure of the experiment
            lost = getattr(self.launcher, "lost", None)  # a cluster launcher's node check
            if result.retryable and lost is not None and lost(assignment):
                with self._lock:
                    self.store.note_attempt_failed(campaign_id, exp.position, cycle, result.reason)
                bound.warning("attempt failed: its node left the cluster", reason=result.reason)
                raise GpusLost(assignment)  # a lane runs it again on a live node
            if result.retryable and attempt < self.options.max_attempts:
                with self._lock:
                    self.store.note_attempt_failed(campaign_id, exp.position, cycle, result.reason)
                bound.warning("attempt failed: retrying", reason=result.reason, attempt=attempt)
                continue
            reason = f"{result.reason} (attempts: {attempts})"
            with self._lock:
                self.store.record_failure(experiment_id, cycle, result.reason, worker_id, attempts)
                outcome.failures.append((exp.name, cycle, reason))
            bound.error("cycle failed", reason=result.reason, attempts=attempts)
            return False
        return False  # max_attempts < 1: nothing was tried

    def _attempt(
        self,
        supervisor: Supervisor,
        exp: PlannedExperiment,
        config: ExperimentConfig,
        experiment_id: str,
        cycle: int,
        assignment: GpuAssignment,
        directory: Path,
    ) -> tuple[Measurement | Failure, str]:
        """One attempt on a live (or fresh) worker: its outcome and the worker's id."""
        bound = log.bind(experiment=exp.name, cycle=cycle)
        if is_data_parallel(config):
            return attempt_data_parallel(
                supervisor,
                lambda part: self._worker_for(supervisor, exp, part, directory),
                assignment, experiment_id, cycle, config,
                lambda _, event, handle: self._progress(exp, cycle, event, handle, bound),
            )  # fmt: skip
        try:
            handle = self._worker_for(supervisor, exp, assignment, directory)
        except WorkerStartError as exc:
            return Failure(str(exc), True), "-"

        command = Run(experiment_id=experiment_id, cycle=cycle, config=config)
        outcome = supervisor.run(
            handle, command, lambda event: self._progress(exp, cycle, event, handle, bound)
        )
        return outcome, handle.spec.worker_id

    def _progress(
        self,
        exp: PlannedExperiment,
        cycle: int,
        event: Progress,
        handle: WorkerHandle,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        bound.info(event.phase, detail=event.detail or None, worker=handle.spec.worker_id)
        if self.on_progress is not None:
            self.on_progress(exp, cycle, event, handle)
