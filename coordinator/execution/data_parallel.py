"""Data-parallel experiments: one worker per GPU, one measurement.

An experiment whose engine runs data-parallel (its spec's ``data_parallel``: PyTorch's
``pytorch.multi_gpu: data``) with ``gpu_count`` n runs as n shards: the
coordinator gives each GPU its own worker (a one-GPU worker, like any other, so a loaded
model is reused by later one-GPU experiments) and a contiguous share of the prompts
(``prompts.skip``). Each shard loads and warms up on its own; when all are armed at the
start barrier the coordinator sends ``Go`` to every one, so their measured windows open
within milliseconds of each other. The shards' results are merged
(``lem.coordinator.execution.shard_merge``): every GPU's energy counted once, tokens added, the
span of the windows' union as the duration. Any shard's failure cancels the others and
fails the attempt as a whole.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.shard_merge import merge_shards
from lem.coordinator.execution.supervisor import Failure, Outcome, Supervisor, WorkerHandle
from lem.protocol.config import ExperimentConfig
from lem.protocol.engines.registry import engine_named
from lem.protocol.messages import Cancel, Go, Progress, Run
from lem.protocol.results import Measurement


def is_data_parallel(config: ExperimentConfig) -> bool:
    """Whether ``config`` runs as one worker per GPU (``pytorch.multi_gpu: data``)."""
    engine = engine_named(config.backend)
    return (
        engine.data_parallel is not None
        and engine.data_parallel.applies(config, engine.section_of(config))
        and config.gpu_count > 1
    )


def shard_prompt_counts(num_prompts: int, shards: int) -> list[int]:
    """Prompts per shard: as even as possible, the first shards taking the remainder."""
    base, extra = divmod(num_prompts, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def shard_configs(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One one-GPU config per shard, each with its contiguous part of the prompt set
    (``prompts.skip``). Together they hold exactly ``config``'s ``num_prompts`` prompts."""
    configs = []
    skip = config.prompts.skip
    engine = engine_named(config.backend)
    one_gpu = {}  # the engine's section of a one-GPU worker
    if engine.data_parallel is not None:
        one_gpu[engine.name] = engine.data_parallel.one_gpu(engine.section_of(config))
    for count in shard_prompt_counts(config.num_prompts, config.gpu_count):
        configs.append(
            msgspec.structs.replace(
                config,
                gpu_count=1,
                num_prompts=count,
                prompts=msgspec.structs.replace(config.prompts, skip=skip),
                **one_gpu,
            )
        )
        skip += count
    return configs


def shard_assignments(assignment: GpuAssignment) -> list[GpuAssignment]:
    """One single-GPU assignment per GPU of ``assignment``, in its order."""
    return [GpuAssignment((uuid,)) for uuid in assignment.gpu_uuids]


@dataclass
class _Shard:
    index: int
    handle: WorkerHandle
    command: Run
    outcome: Outcome | None = None


class _StartBarrier:
    """Counts armed shards; the last one to arm sends ``Go`` to all of them."""

    def __init__(self, supervisor: Supervisor, experiment_id: str, shards: list[_Shard]) -> None:
        self.supervisor = supervisor
        self.experiment_id = experiment_id
        self.shards = shards
        self.armed: set[int] = set()
        self.lock = threading.Lock()

    def arm(self, index: int) -> None:
        with self.lock:
            self.armed.add(index)
            if len(self.armed) < len(self.shards):
                return
        for shard in self.shards:
            self.supervisor.send(shard.handle, Go(experiment_id=self.experiment_id))


ShardProgress = Callable[[int, Progress, WorkerHandle], None]


def run_data_parallel(
    supervisor: Supervisor,
    handles: list[WorkerHandle],
    experiment_id: str,
    cycle: int,
    config: ExperimentConfig,
    on_progress: ShardProgress | None = None,
) -> Outcome:
    """Run one cycle of a data-parallel experiment on ``handles`` (one per GPU, in the
    shard order) and return the merged measurement, or the first shard's failure."""
    configs = shard_configs(config)
    if len(handles) != len(configs):
        return Failure(f"{len(handles)} workers for {len(configs)} shards", worker_died=False)
    group = uuid.uuid4().hex[:12]
    shards = [
        _Shard(
            i,
            handle,
            Run(
                experiment_id=experiment_id,
                cycle=cycle,
                config=shard_config,
                start_barrier=True,
                shard_index=i,
                shard_count=len(configs),
                shard_group=group,
            ),
        )
        for i, (handle, shard_config) in enumerate(zip(handles, configs, strict=True))
    ]
    barrier = _StartBarrier(supervisor, experiment_id, shards)
    failed_first: list[_Shard] = []  # the shard whose failure cancelled the others

    def run_shard(shard: _Shard) -> None:
        def progress(event: Progress) -> None:
            if event.phase == "armed":
                barrier.arm(shard.index)
            if on_progress is not None:
                on_progress(shard.index, event, shard.handle)

        shard.outcome = supervisor.run(shard.handle, shard.command, progress)
        if isinstance(shard.outcome, Measurement):
            return
        with barrier.lock:
            failed_first.append(shard)
            if len(failed_first) > 1:
                return
        for other in shards:  # the others would wait at the barrier until timeout
            if other is not shard:
                supervisor.send(other.handle, Cancel(experiment_id=experiment_id))

    threads = [
        threading.Thread(target=run_shard, args=(s,), name=f"lem-shard-{s.index}", daemon=True)
        for s in shards
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _outcome(shards, failed_first)


def _outcome(shards: list[_Shard], failed_first: list[_Shard]) -> Outcome:
    if failed_first:
        cause = failed_first[0]
        assert isinstance(cause.outcome, Failure)
        return Failure(
            f"data-parallel shard {cause.index} "
            f"({cause.handle.spec.worker_id}): {cause.outcome.reason}",
            worker_died=cause.outcome.worker_died,
            timed_out=cause.outcome.timed_out,
            transient=cause.outcome.transient,
        )
    measurements = [s.outcome for s in shards if isinstance(s.outcome, Measurement)]
    return merge_shards(measurements)


def attempt_data_parallel(
    supervisor: Supervisor,
    start_worker: Callable[[GpuAssignment], WorkerHandle],
    assignment: GpuAssignment,
    experiment_id: str,
    cycle: int,
    config: ExperimentConfig,
    on_progress: ShardProgress | None = None,
) -> tuple[Outcome, str]:
    """One attempt: a live (or fresh) one-GPU worker per GPU of ``assignment``, then
    ``run_data_parallel``. Returns the outcome and the workers' ids."""
    parts = shard_assignments(assignment)
    handles: list[WorkerHandle | None] = [None] * len(parts)
    errors: list[str] = []
    # One after the other, from this thread: a worker's parent-death signal follows the
    # thread that launched it, so a short-lived starter thread would take it down on exit.
    for i, part in enumerate(parts):
        try:
            handles[i] = start_worker(part)
        except Exception as exc:  # WorkerStartError, or anything a launcher raises
            errors.append(f"GPU {part.key}: {exc}")
            break
    started = [h for h in handles if h is not None]
    worker_ids = "+".join(h.spec.worker_id for h in started) or "-"
    if errors or len(started) != len(parts):
        return Failure("; ".join(errors) or "a shard worker did not start", True), worker_ids
    outcome = run_data_parallel(supervisor, started, experiment_id, cycle, config, on_progress)
    return outcome, worker_ids
