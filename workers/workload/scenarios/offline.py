"""The offline scenario, for every engine: warm up, then passes over the whole prompt set
inside the measured window until it has lasted ``min_window_s`` and run
``min_iterations`` passes, optionally the same passes prefill-only (one new token per
prompt) inside the prefill window, and the ``GenerationStats`` of the run.

Inside a window only the engine's batches run: each batch's outputs (token counts,
stamps) are read after the window has closed. A pass's first batch starts at once;
cancel is checked before every later batch (the engine also checks while a batch runs).
Warmup batches run as the measured ones do (with the same token timing), each followed
by a device synchronisation, so that ``warm_up`` times whole batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lem.protocol.config import ExperimentConfig
from lem.protocol.workload import timing_enabled
from lem.workers.engines.base import (
    BatchPlace,
    BatchResult,
    BatchRun,
    BatchT,
    Cancelled,
    Engine,
    GenerationStats,
    LoadInfo,
    MeasurementWindow,
    OfflineWork,
    PhaseCallback,
)
from lem.workers.workload.scenarios.window import measured_window
from lem.workers.workload.warmup import WarmupOutcome, warm_up

TIMING_OFF_REASON = "token timing off (workload.token_timing: false)"


@dataclass(frozen=True)
class PlacedRun:
    """A batch that ran in a window, and where."""

    place: BatchPlace
    run: BatchRun


@dataclass(frozen=True)
class MeasuredPasses:
    """Passes inside one window: its duration (s), start (perf_counter s), the passes run
    and every batch run, in order."""

    duration_s: float
    started_s: float
    passes: int
    runs: list[PlacedRun]

    def results(self) -> list[BatchResult]:
        """Each batch's result (read now: after the window)."""
        return [placed.run.result(placed.place) for placed in self.runs]


def warm_up_offline(
    config: ExperimentConfig, work: OfflineWork[BatchT], stamps: bool, cancel: threading.Event
) -> WarmupOutcome:
    """Warmup batches (fixed, or until converged: ``warm_up``), each synchronised."""

    def batch(index: int) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled during warmup")
        work.run_batch(work.warmup_batch(index), stamps, cancel)
        work.synchronize()

    return warm_up(batch, config.warmup_batches, config.warmup)


def measure_passes(
    work: OfflineWork[BatchT],
    batches: Sequence[BatchT],
    window: MeasurementWindow,
    cancel: threading.Event,
    min_window_s: float,
    min_iterations: int,
    stamps: bool,
) -> MeasuredPasses:
    """Run ``batches`` pass after pass inside ``window`` until ``min_window_s`` seconds and
    ``min_iterations`` passes are both reached (at least one pass)."""
    runs: list[PlacedRun] = []
    passes = 0
    with measured_window(window, work.synchronize) as clock:
        while True:
            pass_started_s = time.perf_counter()
            for index, batch in enumerate(batches):
                if (index or passes) and cancel.is_set():
                    raise Cancelled("cancelled during a measured window")
                run = work.run_batch(batch, stamps, cancel)
                runs.append(PlacedRun(BatchPlace(passes, index, pass_started_s), run))
            passes += 1
            if passes >= min_iterations and time.perf_counter() - clock.started_s >= min_window_s:
                break
    return MeasuredPasses(clock.duration_s, clock.started_s, passes, runs)


def warmup_detail(config: ExperimentConfig, unit: str) -> str:
    """The warmup phase's progress line."""
    batches = f"{config.warmup_batches} batch(es) of {config.batch_size} {unit}"
    until = config.warmup.until_cv
    return batches if until is None else f"at least {batches}, until CV <= {until:g}"


def run_offline(
    engine: Engine,
    load: LoadInfo,
    config: ExperimentConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    min_window_s: float,
    prefill_window: MeasurementWindow | None,
) -> GenerationStats:
    """Warm up, measure the passes (and the prefill-only passes) on the loaded ``engine``.

    Raises ``Cancelled`` when ``cancel`` is set (the window is then not closed)."""
    timing = timing_enabled(config.workload)
    with engine.offline(config) as work:
        on_phase("warmup", warmup_detail(config, "prompts"))
        warmed = warm_up_offline(config, work, timing, cancel)
        if cancel.is_set():
            raise Cancelled("cancelled before the measured window")
        batches = work.pass_batches
        on_phase(
            "measuring",
            f"{len(batches)} batch(es) a pass, passes until {min_window_s:g} s and "
            f"{config.min_iterations} pass(es)",
        )
        measured = measure_passes(
            work, batches, window, cancel, min_window_s, config.min_iterations, timing
        )
        prefilled = None
        if prefill_window is not None:
            on_phase("measuring", "prefill only: one new token per prompt")
            prefilled = measure_passes(
                work, work.prefill_batches, prefill_window, cancel, min_window_s,
                config.min_iterations, stamps=False,
            )  # fmt: skip
        results = measured.results()
        prompt_set = work.prompt_set
    memory = engine.memory()
    requests = [request for result in results for request in result.requests]
    steps = [result.engine_steps for result in results]
    return GenerationStats(
        duration_s=measured.duration_s,
        repetitions=measured.passes,
        # the engine's steps when it reports them, else the batches run
        batches=sum(s or 0 for s in steps) if None not in steps else len(results),
        num_prompts=sum(result.prompts for result in results),
        input_tokens=sum(result.input_tokens for result in results),
        output_tokens=sum(result.output_tokens for result in results),
        warmup_batches=warmed.batches,
        warmup_s=warmed.duration_s,
        warmup_converged=warmed.converged,
        warmup_final_cv=warmed.final_cv,
        peak_gpu_memory_load_mib=memory.peak_load_mib,
        peak_gpu_memory_inference_mib=memory.peak_inference_mib,
        gpu_memory_unavailable_reason=memory.unavailable_reason,
        model_load_s=load.model_load_s,
        model_reused=load.model_reused,
        model_load_count=load.model_load_count,
        device=load.device,
        resolved_dtype=load.dtype,
        prefill_duration_s=prefilled.duration_s if prefilled is not None else None,
        prefill_repetitions=prefilled.passes if prefilled is not None else 0,
        prompt_set_hash=prompt_set.prompt_set_hash if prompt_set is not None else None,
        prompt_source=prompt_set.source_description if prompt_set is not None else None,
        timed_requests=requests,
        window_started_s=measured.started_s,
        latency_unavailable_reason=None if requests or timing else TIMING_OFF_REASON,
    )
