"""Running a planned campaign: assign GPUs, keep long-lived workers, store every outcome.

Experiments that share a load key run back to back, so a worker loads the model once.
Each planned (experiment position, cycle) pair is run only if the store has no ok result
for it, so the same code starts and resumes a campaign (resume.py). An experiment's row is
inserted when it is first dispatched. A worker that dies, hangs or runs past the
experiment's ``timeout_s`` is replaced and the cycle retried, up to ``max_attempts``
attempts, as is one whose error says a fresh attempt may succeed (``Failure.retryable``:
a started server that did not start); then the cycle is recorded failed with the reason
and the attempt count, and the campaign goes on. SIGINT/SIGTERM stop dispatching, tell
busy workers to cancel and shut down, kill what has not exited after ``shutdown_grace_s``,
and mark the campaign and its running cycles interrupted. Any other exception stops the
campaign ``failed``, so resumable, with the error stored (``stopped_by``), and is raised
again.

When disjoint GPU sets let several experiments run at once (two one-GPU experiments on a
two-GPU node, say), lanes.py runs them in parallel threads, each on its own GPU set and
worker, at most ``max_parallel`` at a time; with one lane the loop below runs as before.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import structlog

from lem.coordinator.execution.allocator import GpuAllocator
from lem.coordinator.execution.cluster_run import (
    CLUSTER_ENDPOINT,
    cluster_allocator,
    open_cluster,
)
from lem.coordinator.execution.cycle_runs import (
    CampaignOutcome,
    CycleDoneHook,
    CycleRuns,
    ProgressHook,
    RunOptions,
    StartedHook,
)
from lem.coordinator.execution.gpu_control import GpuControl
from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.hub import Hub
from lem.coordinator.execution.interrupts import Interrupted, ignoring_interrupts, interrupts_raise
from lem.coordinator.execution.lanes import LanePool, gpu_pool, lane_count
from lem.coordinator.execution.launcher import (
    LocalProcessLauncher,
    WorkerLauncher,
)
from lem.coordinator.execution.ray_cluster import RayCluster
from lem.coordinator.execution.ray_launcher import RayLauncher
from lem.coordinator.execution.resume import (
    ingest_journals,
    refuse_if_running,
    run_dir,
    source_text,
)
from lem.coordinator.execution.supervisor import Supervisor, WorkerHandle
from lem.coordinator.execution.sweeps import SweepPoints
from lem.coordinator.planning.campaign import CampaignPlan, PlannedExperiment
from lem.coordinator.planning.dispatch_plan import (
    GpuRequest,
    assign_all,
    gpu_request,
    planned_cycles,
)
from lem.coordinator.store.results_store import Store
from lem.coordinator.store.state import StoredCampaign, error_text
from lem.protocol.devices.nvml import inventory

log = structlog.get_logger("lem.campaign")


class CampaignRunner(CycleRuns):
    """Runs one plan against one store with one hub and supervisor.

    ``on_progress`` is called with (experiment, cycle, progress event, worker) at each phase;
    ``on_cycle_done`` with (experiment, cycle, ok, duration_s) after each cycle is stored;
    ``on_started`` with (campaign id, run folder) once the campaign has its id, before it logs
    anything about it (the CLI opens the campaign's log file there).
    ``campaign_id``: the campaign run (once created or reopened); ``stopped_by``: the error
    stored with it when an unexpected error stopped it.
    """

    def __init__(
        self,
        plan: CampaignPlan,
        store: Store,
        options: RunOptions,
        launcher: WorkerLauncher | None = None,
        on_progress: ProgressHook | None = None,
        on_cycle_done: CycleDoneHook | None = None,
        on_started: StartedHook | None = None,
        cluster: RayCluster | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.options = options
        self.launcher = launcher or LocalProcessLauncher()
        self.on_progress = on_progress
        self.on_cycle_done = on_cycle_done
        self.on_started = on_started
        self.cluster = cluster  # joined by the caller (else ``options.cluster`` is, per run)
        self._workers: dict[tuple[str, str], WorkerHandle] = {}
        self._worker_count = 0
        self._lock = threading.Lock()  # the store, outcome and _workers: lanes share them
        self.campaign_id: str | None = None
        self.stopped_by: str | None = None
        self._points = SweepPoints(set())
        self._gpu: GpuControl | None = None

    def run(self, resume: StoredCampaign | None = None) -> CampaignOutcome:
        """Run the plan's pending cycles: all of them, or for ``resume`` those without an
        ok result in the store (after ingesting the campaign's worker journals)."""
        cluster = self.cluster or open_cluster(self.options.cluster)
        try:
            return self._run(resume, cluster)
        finally:
            if cluster is not None and cluster is not self.cluster:
                cluster.close()

    def _run(self, resume: StoredCampaign | None, cluster: RayCluster | None) -> CampaignOutcome:
        if cluster is not None:
            self.launcher = RayLauncher(cluster)
        gpus = cluster.all_gpus() if cluster is not None else None
        assignments = assign_all(self.plan, self.options.allowed_gpu_indices, gpus)
        text = source_text(self.plan.source_path)
        count = len(self.plan.experiments)
        if resume is None:
            campaign_id = self.store.create_campaign(
                self.plan.name,
                str(self.plan.source_path.resolve()),
                self.plan.source_hash,
                self.plan.cycles,
                source_text=text,
                experiment_count=count,
            )
        else:
            campaign_id = resume.id
            self.store.reopen_campaign(
                campaign_id, self.plan.source_hash, text, count,
                claimant=(socket.gethostname(), os.getpid()), refuse=refuse_if_running,
            )  # fmt: skip
        self.campaign_id, self.stopped_by = campaign_id, None
        self.store.claim_campaign(campaign_id, socket.gethostname(), os.getpid())
        outcome = CampaignOutcome(campaign_id)
        directory = run_dir(self.options.store_path, campaign_id)
        if self.on_started is not None:
            self.on_started(campaign_id, directory)
        if resume is not None:
            if cluster is not None:  # each worker journalled on its own node
                log.info("journals gathered", files=cluster.gather(campaign_id, directory))
            outcome.ingested = ingest_journals(self.store, campaign_id, directory / "journals")
        done = self.store.ok_pairs(campaign_id)
        outcome.already_done = len(done)
        hub = Hub(CLUSTER_ENDPOINT if cluster is not None else self.options.endpoint)
        supervisor = Supervisor(
            hub,
            self.launcher,
            self.options.heartbeat_interval_s,
            self.options.heartbeat_timeout_s,
            self.options.handshake_timeout_s,
            cancel_grace_s=self.options.cancel_grace_s,
        )
        log.info(
            "campaign resumed" if resume else "campaign started",
            campaign=campaign_id,
            experiments=count,
            cycles=self.plan.cycles,
            done=len(done),
            from_journals=outcome.ingested,
            endpoint=hub.endpoint,
            curve=hub.curve_public_key is not None,  # tcp://: workers authenticated (CurveZMQ)
        )
        status = "finished"
        self._points = SweepPoints(done)
        self._gpu = GpuControl(self.options.store_path) if cluster is None else None
        pool = self._lanes(supervisor, assignments, done, directory, outcome, cluster)
        try:
            with interrupts_raise():
                if pool is not None:
                    pool.start()
                    pool.wait()
                for exp, cycle in planned_cycles(self.plan) if pool is None else ():
                    if (exp.position, cycle) in done:
                        continue
                    started_s = time.monotonic()
                    ok = self._run_cycle(
                        supervisor, exp, cycle, assignments[gpu_request(exp)], directory, outcome
                    )
                    if ok is not None and self.on_cycle_done is not None:
                        self.on_cycle_done(exp, cycle, bool(ok), time.monotonic() - started_s)
        except Interrupted as exc:
            status = "interrupted"
            outcome.interrupted = True
            log.warning("interrupted: stopping workers", signal=str(exc))
        except BaseException as exc:  # unfinished, so resumable: never ``finished``
            status, self.stopped_by = "failed", error_text(exc)
            log.error("campaign stopped by an error", error=self.stopped_by)
            raise
        finally:
            with ignoring_interrupts():
                if pool is not None:
                    pool.stop()
                supervisor.stop_all("campaign " + status, self.options.shutdown_grace_s)
                self._give_back_gpu_settings()
                if pool is not None:  # a lane may have started a worker meanwhile
                    pool.join(self.options.shutdown_grace_s + 10.0)
                    supervisor.stop_all("campaign " + status, self.options.shutdown_grace_s)
                    pool.close()  # only now: a worker dies with the thread that launched it
                    self._give_back_gpu_settings()  # what a lane set meanwhile
                hub.close()
                if cluster is not None:  # the workers' logs (and journals) beside the store
                    cluster.gather(campaign_id, directory)
                if status == "finished" and outcome.failures:
                    status = "failed"
                self.store.interrupt_running(campaign_id)
                self.store.finish_campaign(campaign_id, status, self.stopped_by)
        return outcome

    def _give_back_gpu_settings(self) -> None:
        for problem in self._gpu.restore_all() if self._gpu is not None else ():
            log.error("gpu settings not restored (kept in the ledger)", problem=problem)

    def _lanes(
        self,
        supervisor: Supervisor,
        assignments: dict[GpuRequest, GpuAssignment],
        done: set[tuple[int, int]],
        directory: Path,
        outcome: CampaignOutcome,
        cluster: RayCluster | None = None,
    ) -> LanePool | None:
        """Parallel lanes when more than one pending experiment fits at once, else None; on
        a cluster always lanes (GPU sets are taken per node, and a lost node's cycles move)."""
        pending = len(self.plan.experiments) * self.plan.cycles - len(done)  # lazy plan: count
        counts = {key: len(a.gpu_uuids) for key, a in assignments.items()}
        gpu_counts = sorted(set(counts.values()))
        if cluster is not None:
            allocator = cluster_allocator(cluster, max(gpu_counts, default=0))
        elif self.options.max_parallel == 1 or pending < 2 or not any(gpu_counts):
            return None
        else:
            uuids = gpu_pool(inventory().gpus, self.options.allowed_gpu_indices)
            allocator = GpuAllocator(uuids)
        lanes = lane_count(allocator, gpu_counts, pending, self.options.max_parallel)
        if lanes < 2 and cluster is None:
            return None
        log.info("parallel lanes", lanes=lanes, gpus=len(allocator.gpu_uuids))
        pool: LanePool | None = None

        def run_cycle(exp: PlannedExperiment, cycle: int, assignment: GpuAssignment) -> bool | None:
            assert pool is not None
            return self._run_cycle(
                supervisor, exp, cycle, assignment, directory, outcome, pool.stopping
            )

        def preferred(exp: PlannedExperiment) -> list[GpuAssignment]:
            with self._lock:
                return [
                    h.spec.assignment
                    for (backend, _), h in self._workers.items()
                    if backend == exp.config.backend and h.alive
                ]

        pairs = ((e, c) for e, c in planned_cycles(self.plan) if (e.position, c) not in done)
        pool = LanePool(
            lanes, pairs, lambda exp: counts[gpu_request(exp)], allocator, run_cycle, preferred,
            self.on_cycle_done,
        )  # fmt: skip
        return pool
