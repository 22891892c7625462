"""Timed passes of the TensorRT-LLM backend: the prompt set through ``LLM.generate_async``
with streaming, every token stamped when it reaches lem (experimental, never run on a GPU).

Written against TensorRT-LLM 1.0's documented streaming API: ``generate_async(inputs,
sampling_params=..., streaming=True)`` returns a result that is iterated with ``async
for``; each step gives the request's output so far (``outputs[0].token_ids``, all its
tokens). lem stamps each step's arrival (``perf_counter``) as it is handed to the event
loop: those are the token times, one per output token, with no estimate; tokens one step
brings together share its stamp. TensorRT-LLM's own per-request queue time is not read
(``queued_s`` None): the offline LLM API does not report it without extra statistics.

The coroutines run on one event loop the backend keeps (results bind to the loop they are
made on).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lem.workers.engines.base import Cancelled, MeasurementWindow, TimedRequest


@dataclass
class RequestRecord:
    """One request of a pass: its prompt's length (tokens) and its token arrival stamps
    (perf_counter s)."""

    prompt_index: int
    input_tokens: int
    token_times_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PassResult:
    """One pass over the prompt set: when it began (perf_counter s) and its requests in
    send order."""

    started_s: float
    records: list[RequestRecord]


@dataclass(frozen=True)
class TimedTrtPasses:
    """Passes inside one measured window: its duration (s), start (perf_counter s) and
    passes in order."""

    duration_s: float
    started_s: float
    passes: list[PassResult]


async def _follow(result: Any, record: RequestRecord, cancel: threading.Event) -> None:
    """Stamp each streamed step of ``result`` into ``record`` until it finishes."""
    async for output in result:
        now_s = time.perf_counter()
        total_tokens = len(output.outputs[0].token_ids)
        record.token_times_s.extend([now_s] * (total_tokens - len(record.token_times_s)))
        if cancel.is_set():
            raise Cancelled("cancelled during a TensorRT-LLM pass")


async def run_pass(
    llm: Any, prompts: list[list[int]], params: list[Any], cancel: threading.Event
) -> PassResult:
    """Send every prompt (token ids) to ``llm`` at once, streamed, and wait until all are
    finished; TensorRT-LLM runs at most the engine's ``max_batch_size`` at a time."""
    started_s = time.perf_counter()
    records = [RequestRecord(index, len(prompt)) for index, prompt in enumerate(prompts)]
    results = [
        llm.generate_async(prompt, sampling_params=sampling, streaming=True)
        for prompt, sampling in zip(prompts, params, strict=True)
    ]
    try:
        followers = zip(results, records, strict=True)
        await asyncio.gather(*(_follow(result, record, cancel) for result, record in followers))
    except Cancelled:
        for result in results:
            if not getattr(result, "finished", True):
                result.abort()
        raise
    return PassResult(started_s, records)


async def timed_passes(
    llm: Any,
    prompts: list[list[int]],
    params: list[Any],
    window: MeasurementWindow,
    cancel: threading.Event,
    min_window_s: float,
    min_iterations: int,
) -> TimedTrtPasses:
    """Passes over the prompt set until ``min_window_s`` seconds and ``min_iterations``
    passes are both reached. The window's edges need no device sync in this process: at
    ``begin`` no request is in flight, and at ``end`` the last token of the last request
    has reached lem."""
    passes: list[PassResult] = []
    window.begin()
    started_s = time.perf_counter()
    while len(passes) < min_iterations or time.perf_counter() - started_s < min_window_s:
        passes.append(await run_pass(llm, prompts, params, cancel))
    duration_s = time.perf_counter() - started_s
    window.end()
    return TimedTrtPasses(duration_s, started_s, passes)


def timed_requests(passes: list[PassResult]) -> list[TimedRequest]:
    """lem's timed requests of the measured passes (send order): every request of a pass
    was sent at the pass's start; the queue time is unknown (None)."""
    return [
        TimedRequest(
            pass_index=pass_index,
            batch_index=None,
            input_tokens=record.input_tokens,
            start_s=done.started_s,
            token_times_s=list(record.token_times_s),
            queued_s=None,
        )
        for pass_index, done in enumerate(passes)
        for record in done.records
    ]
