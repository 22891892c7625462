"""The offline run shared by the engine backends (vLLM's ``LLM``, TensorRT-LLM's ``LLM``):
warm up on batches of the prompt set, run timed passes over the whole set inside the
measured window, optionally the same passes prefill-only inside the prefill window, and
turn the passes into ``GenerationStats``. Each backend supplies how one batch and one
series of passes run on its engine; times are perf_counter seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import (
    Cancelled,
    GenerationStats,
    MeasurementWindow,
    PhaseCallback,
    TimedRequest,
)
from lem.workers.workload.prompt_set import PromptSet
from lem.workers.workload.warmup import WarmupOutcome, warm_up


class TimedRecord(Protocol):
    """One request of a pass: its prompt's tokens and a stamp per output token."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def token_times_s(self) -> list[float]: ...


class TimedPass(Protocol):
    @property
    def records(self) -> Sequence[TimedRecord]: ...


class TimedPasses(Protocol):
    """Passes over the prompt set inside one window: how long the window lasted (s) and
    when it began (perf_counter s)."""

    @property
    def duration_s(self) -> float: ...

    @property
    def started_s(self) -> float: ...

    @property
    def passes(self) -> Sequence[TimedPass]: ...


Passes = TypeVar("Passes", bound=TimedPasses)


@dataclass(frozen=True)
class WarmedAndMeasured(Generic[Passes]):
    """What ``warm_then_measure`` ran: the warmup, the measured passes and the
    prefill-only passes (None when no prefill window was asked for)."""

    warmed: WarmupOutcome
    measured: Passes
    prefilled: Passes | None


def warm_then_measure(
    config: ExperimentConfig,
    prompt_count: int,
    warmup_batch: Callable[[list[int], int], None],
    measure: Callable[[MeasurementWindow, bool], Passes],
    window: MeasurementWindow,
    prefill_window: MeasurementWindow | None,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    min_window_s: float,
) -> WarmedAndMeasured[Passes]:
    """Warm up with ``warmup_batch(prompt indices, batch number)`` on ``batch_size`` prompts
    at a time (cycling the set), then ``measure(window, prefill_only)`` the passes."""
    on_phase("warmup", f"{config.warmup_batches} batch(es) of {config.batch_size} prompts")
    size = config.batch_size

    def batch(i: int) -> None:
        first = (i * size) % prompt_count
        warmup_batch(list(range(first, min(first + size, prompt_count))), i)

    warmed = warm_up(batch, config.warmup_batches, config.warmup)
    if cancel.is_set():
        raise Cancelled("cancelled before the measured window")
    on_phase("measuring", f"{prompt_count} prompt(s) a pass, until {min_window_s:g} s")
    measured = measure(window, False)
    prefilled = None
    if prefill_window is not None:
        on_phase("measuring", "prefill only: one new token per prompt")
        prefilled = measure(prefill_window, True)
    return WarmedAndMeasured(warmed, measured, prefilled)


@dataclass(frozen=True)
class EngineFacts:
    """What the backend knows of its engine for the stats: batches run (engine steps, or
    passes when the engine does not say), the load (s), reuse and count, the device and
    why GPU memory is not reported."""

    batches: int
    model_load_s: float
    model_reused: bool
    model_load_count: int
    device: str
    memory_unavailable_reason: str


def offline_stats(
    run: WarmedAndMeasured[Passes],
    prompt_set: PromptSet,
    facts: EngineFacts,
    timed_requests: list[TimedRequest],
) -> GenerationStats:
    """The ``GenerationStats`` of an offline engine run (token counts over every pass)."""
    measured = run.measured
    records = [record for done in measured.passes for record in done.records]
    prefilled = run.prefilled
    return GenerationStats(
        duration_s=measured.duration_s,
        repetitions=len(measured.passes),
        batches=facts.batches,
        num_prompts=len(records),
        input_tokens=sum(record.input_tokens for record in records),
        output_tokens=sum(len(record.token_times_s) for record in records),
        warmup_batches=run.warmed.batches,
        warmup_s=run.warmed.duration_s,
        warmup_converged=run.warmed.converged,
        warmup_final_cv=run.warmed.final_cv,
        peak_gpu_memory_load_mib=None,
        peak_gpu_memory_inference_mib=None,
        gpu_memory_unavailable_reason=facts.memory_unavailable_reason,
        model_load_s=facts.model_load_s,
        model_reused=facts.model_reused,
        model_load_count=facts.model_load_count,
        device=facts.device,
        prefill_duration_s=prefilled.duration_s if prefilled is not None else None,
        prefill_repetitions=len(prefilled.passes) if prefilled is not None else 0,
        prompt_set_hash=prompt_set.prompt_set_hash,
        prompt_source=prompt_set.source_description,
        timed_requests=timed_requests,
        window_started_s=measured.started_s,
    )
