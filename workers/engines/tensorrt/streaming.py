"""Offline batches of the TensorRT-LLM backend: prompts through ``LLM.generate_async``
with streaming, every token stamped when it reaches lem (experimental, never run on a GPU).

Written against TensorRT-LLM 1.0's documented streaming API: ``generate_async(inputs,
sampling_params=..., streaming=True)`` returns a result that is iterated with ``async
for``; each step gives the request's output so far (``outputs[0].token_ids``, all its
tokens). lem stamps each step's arrival (``perf_counter``) as it is handed to the event
loop: those are the token times, one per output token, with no estimate; tokens one step
brings together share its stamp. TensorRT-LLM's own per-request queue time is not read
(``queued_s`` None): the offline LLM API does not report it without extra statistics.

One offline batch is the whole prompt set, sent at once: the engine runs at most its
``max_batch_size`` requests together. Warmup batches are ``batch_size`` prompts. The
coroutines run on one event loop the backend keeps (results bind to the loop they are
made on).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from lem.workers.engines.base import BatchPlace, BatchResult, Cancelled, TimedRequest
from lem.workers.workload.prompt_set import PromptSet, cycled_batch


@dataclass
class RequestRecord:
    """One request of a pass: its prompt's length (tokens) and its token arrival stamps
    (perf_counter s)."""

    prompt_index: int
    input_tokens: int
    token_times_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PassResult:
    """One batch sent at once: when it was sent (perf_counter s) and its requests in send
    order."""

    started_s: float
    records: list[RequestRecord]

    def result(self, place: BatchPlace) -> BatchResult:
        """Counts and lem's timed requests of the batch (send order): every request was
        sent at the batch's start; the queue time is unknown (None); TensorRT-LLM's LLM
        API reports no engine steps."""
        requests = [
            TimedRequest(
                pass_index=place.pass_index,
                batch_index=None,
                input_tokens=record.input_tokens,
                start_s=self.started_s,
                token_times_s=list(record.token_times_s),
                queued_s=None,
            )
            for record in self.records
        ]
        return BatchResult(
            prompts=len(self.records),
            input_tokens=sum(record.input_tokens for record in self.records),
            output_tokens=sum(len(record.token_times_s) for record in self.records),
            engine_steps=None,
            requests=requests,
        )


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


@dataclass(frozen=True)
class TrtBatch:
    """Prompts (token ids) with one ``SamplingParams`` each."""

    prompts: list[list[int]]
    params: list[Any]


class TrtOffline:
    """The offline work of one experiment on a TensorRT-LLM ``LLM`` (``OfflineWork``).
    ``run`` runs a coroutine on the backend's event loop. The window's edges need no
    device sync in this process: at ``begin`` no request is in flight, and at ``end``
    the last token of the last request has reached lem."""

    def __init__(
        self,
        run: Callable[[Coroutine[Any, Any, PassResult]], PassResult],
        llm: Any,
        prompt_set: PromptSet,
        params: list[Any],
        prefill_params: list[Any],
        batch_size: int,
    ) -> None:
        self._run = run
        self.llm = llm
        self.prompt_set = prompt_set
        self.pass_batches = [TrtBatch(prompt_set.prompt_ids, params)]
        self.prefill_batches = [TrtBatch(prompt_set.prompt_ids, prefill_params)]
        self.batch_size = batch_size

    def warmup_batch(self, index: int) -> TrtBatch:
        full = self.pass_batches[0]
        chosen = cycled_batch(index, self.batch_size, len(full.prompts))
        return TrtBatch([full.prompts[j] for j in chosen], [full.params[j] for j in chosen])

    def run_batch(self, batch: TrtBatch, stamps: bool, cancel: threading.Event) -> PassResult:
        """Stream ``batch`` to its end; the stamps cost nothing, so they are always taken."""
        return self._run(run_pass(self.llm, batch.prompts, batch.params, cancel))

    def synchronize(self) -> None:
        pass
