"""Timed passes over the prepared batches inside one measurement window, and the requests
(rows) they timed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lem.workers.engines.base import Cancelled, MeasurementWindow, TimedRequest
from lem.workers.engines.pytorch import device as devices
from lem.workers.engines.pytorch.generation import generate_batch

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from lem.workers.engines.pytorch.prompts import PreparedBatch
    from lem.workers.engines.pytorch.token_clock import ClockName, TokenClock


@dataclass(frozen=True)
class CallTiming:
    """One timed generate call: its pass and batch, when its pass and the call began
    (perf_counter s), and its token clock."""

    pass_index: int
    batch_index: int
    pass_started_s: float
    started_s: float
    clock: TokenClock


@dataclass(frozen=True)
class TimedPasses:
    """What ``timed_passes`` measured: the window's duration (s) and start (perf_counter
    s), the passes, one output per generate call and, with token timing, one
    ``CallTiming`` per call."""

    duration_s: float
    started_s: float
    passes: int
    outputs: list[torch.Tensor]
    calls: list[CallTiming] = field(default_factory=list)


def timed_generate(
    model: PreTrainedModel,
    batch: PreparedBatch,
    generation: GenerationConfig,
    clock: ClockName = "loop",
) -> tuple[torch.Tensor, float, TokenClock]:
    """Generate ``batch`` with a token clock (``token_clock``): returns the sequences, when
    the call began (perf_counter s) and the clock. ``loop`` stamps the decoding loop's tests
    and adds no device work; ``streamer`` is the costlier streamer clock, for comparison."""
    from lem.workers.engines.pytorch.token_clock import LoopClock, StepClock

    if clock == "loop":
        with LoopClock.attached(model) as loop_clock:
            started_s = time.perf_counter()
            return generate_batch(model, batch, generation), started_s, loop_clock
    streamer = StepClock()
    started_s = time.perf_counter()
    return generate_batch(model, batch, generation, streamer), started_s, streamer


def timed_passes(
    model: PreTrainedModel,
    batches: list[PreparedBatch],
    generation: GenerationConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    min_window_s: float,
    min_iterations: int,
    device: str,
    clock: ClockName | None = None,
) -> TimedPasses:
    """Generate every batch, pass after pass, until ``min_window_s`` seconds and
    ``min_iterations`` passes are both reached; the window's edges sit right after a device
    synchronisation. With a ``clock`` (token timing), each call goes through
    ``timed_generate``; without, the calls are exactly the untimed ones."""
    outputs: list[torch.Tensor] = []
    calls: list[CallTiming] = []
    devices.synchronize(device)
    window.begin()
    started_s = time.perf_counter()
    passes = 0
    while True:
        pass_started_s = time.perf_counter()
        for index, batch in enumerate(batches):
            if (index or passes) and cancel.is_set():
                raise Cancelled("cancelled during a measured window")
            if clock is not None:
                output, call_started_s, call_clock = timed_generate(model, batch, generation, clock)
                outputs.append(output)
                calls.append(CallTiming(passes, index, pass_started_s, call_started_s, call_clock))
            else:
                outputs.append(generate_batch(model, batch, generation))
        passes += 1
        if passes >= min_iterations and time.perf_counter() - started_s >= min_window_s:
            break
    devices.synchronize(device)
    duration_s = time.perf_counter() - started_s
    window.end()
    return TimedPasses(duration_s, started_s, passes, outputs, calls)


def timed_requests(
    calls: list[CallTiming],
    outputs: list[torch.Tensor],
    tokens_per_row: list[list[int]],
    batches: list[PreparedBatch],
) -> list[TimedRequest]:
    """One TimedRequest per row of every timed call, in call then row order: the row's
    tokens are the first ``tokens_per_row[call][row]`` steps of its call (the rows of a
    batch share each step's time); it started with its call and queued from its pass's
    start. Raises ValueError when a call's clock disagrees with its output."""
    requests: list[TimedRequest] = []
    input_tokens = [batch.attention_mask.sum(dim=1).tolist() for batch in batches]
    for call, output, counts in zip(calls, outputs, tokens_per_row, strict=True):
        batch = batches[call.batch_index]
        steps_s = call.clock.step_times_s(int(output.shape[1]) - batch.input_width_tokens)
        queued_s = call.started_s - call.pass_started_s
        for row, count in enumerate(counts):
            requests.append(
                TimedRequest(
                    pass_index=call.pass_index,
                    batch_index=call.batch_index,
                    input_tokens=int(input_tokens[call.batch_index][row]),
                    start_s=call.started_s,
                    token_times_s=steps_s[:count],
                    queued_s=queued_s,
                )
            )
    return requests
