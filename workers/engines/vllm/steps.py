"""Offline batches of the vLLM backend: prompts through vLLM's engine step loop.

Not yet run on a GPU: written against vLLM's ``LLMEngine`` API (``add_request``,
``step``, ``has_unfinished_requests``, ``abort_request``), the same loop that
``LLM.generate`` runs inside, so lem's loop adds no engine work. Each ``step`` returns the
requests that got new tokens; lem stamps their arrival on the host (``perf_counter``)
right then: those are the token times, one per output token, with no estimate. When one
step brings a request several tokens, they share the step's stamp (they reached the host
together). vLLM's own request metrics (``RequestOutput.metrics``, when vLLM fills it) are
kept beside lem's, as vLLM reports them.

One offline batch is the whole prompt set, sent at once: vLLM batches it by itself, at
most ``max_num_seqs`` sequences together. Warmup batches are ``batch_size`` prompts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lem.workers.engines.base import BatchPlace, BatchResult, Cancelled, TimedRequest
from lem.workers.workload.prompt_set import PromptSet, cycled_batch


@dataclass
class RequestRecord:
    """One request of a pass as it ran: its prompt's length (tokens), its token arrival
    stamps (perf_counter s) and vLLM's own metrics for it (None when vLLM gave none)."""

    prompt_index: int
    input_tokens: int
    token_times_s: list[float] = field(default_factory=list)
    vllm_metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class PassResult:
    """One batch sent at once and stepped to its end: when it was sent (perf_counter s),
    its requests in send order and the engine steps it took."""

    started_s: float
    records: list[RequestRecord]
    engine_steps: int

    def result(self, place: BatchPlace) -> BatchResult:
        """Counts, steps and lem's timed requests of the batch (send order): every request
        was sent at the batch's start; ``queued_s`` is vLLM's queue time when it reported
        one."""
        requests = [
            TimedRequest(
                pass_index=place.pass_index,
                batch_index=None,
                input_tokens=record.input_tokens,
                start_s=self.started_s,
                token_times_s=list(record.token_times_s),
                queued_s=queued_from_metrics(record.vllm_metrics),
            )
            for record in self.records
        ]
        return BatchResult(
            prompts=len(self.records),
            input_tokens=sum(record.input_tokens for record in self.records),
            output_tokens=sum(len(record.token_times_s) for record in self.records),
            engine_steps=self.engine_steps,
            requests=requests,
        )


def metrics_dict(metrics: Any) -> dict[str, Any] | None:
    """vLLM's request metrics object as a plain dict of its numeric fields (the field set
    differs between vLLM versions; every number it has is kept, under vLLM's names)."""
    if metrics is None:
        return None
    names = getattr(metrics, "__dataclass_fields__", None) or vars(metrics)
    found = {name: getattr(metrics, name, None) for name in names}
    return {
        k: v for k, v in found.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def queued_from_metrics(metrics: dict[str, Any] | None) -> float | None:
    """vLLM's queue time of a request (s: ``scheduled_ts - queued_ts``, both on the engine
    core's monotonic clock), or None when vLLM reported neither."""
    if not metrics or "scheduled_ts" not in metrics or "queued_ts" not in metrics:
        return None
    return max(0.0, float(metrics["scheduled_ts"]) - float(metrics["queued_ts"]))


def run_pass(
    engine: Any,
    prompts: list[Any],
    params: list[Any],
    cancel: threading.Event,
    tag: str,
) -> PassResult:
    """Send every prompt to ``engine`` (a vLLM ``LLMEngine``) at once and step it until
    all are finished; vLLM schedules at most ``max_num_seqs`` of them at a time."""
    records: list[RequestRecord] = []
    ids: list[str] = []
    started_s = time.perf_counter()
    for index, (prompt, sampling) in enumerate(zip(prompts, params, strict=True)):
        request_id = f"{tag}-{index}"
        engine.add_request(request_id, prompt, sampling)
        ids.append(request_id)
        records.append(RequestRecord(index, len(prompt["prompt_token_ids"])))
    by_id = dict(zip(ids, records, strict=True))
    steps = 0
    while engine.has_unfinished_requests():
        if cancel.is_set():
            engine.abort_request(ids)
            raise Cancelled("cancelled during a vLLM pass")
        outputs = engine.step()
        now_s = time.perf_counter()
        steps += 1
        for output in outputs:
            record = by_id[output.request_id]
            total_tokens = len(output.outputs[0].token_ids)
            record.token_times_s.extend([now_s] * (total_tokens - len(record.token_times_s)))
            if output.finished:
                record.vllm_metrics = metrics_dict(getattr(output, "metrics", None))
    return PassResult(started_s, records, steps)


@dataclass(frozen=True)
class VllmBatch:
    """Prompts (vLLM ``TokensPrompt``s) with one ``SamplingParams`` each, and what the
    batch is for: ``warmup``, ``pass`` (measured) or ``prefill`` (request id tags)."""

    prompts: list[Any]
    params: list[Any]
    kind: str


class VllmOffline:
    """The offline work of one experiment on vLLM's ``LLMEngine`` (``OfflineWork``).
    The window's edges need no device sync in this process (vLLM's GPU work runs in its
    engine process): ``synchronize`` checks that no request is in flight, so at ``begin``
    the engine has none and at ``end`` the last token has reached the host."""

    def __init__(
        self,
        engine: Any,
        prompt_set: PromptSet,
        prompts: list[Any],
        params: list[Any],
        prefill_params: list[Any],
        batch_size: int,
    ) -> None:
        self.engine = engine
        self.prompt_set = prompt_set
        self.pass_batches = [VllmBatch(prompts, params, "pass")]
        self.prefill_batches = [VllmBatch(prompts, prefill_params, "prefill")]
        self.batch_size = batch_size
        self.measured: list[PassResult] = []  # the measured passes, in order
        self._sent: dict[str, int] = {}

    def warmup_batch(self, index: int) -> VllmBatch:
        full = self.pass_batches[0]
        chosen = cycled_batch(index, self.batch_size, len(full.prompts))
        return VllmBatch([full.prompts[j] for j in chosen], [full.params[j] for j in chosen],
                         "warmup")  # fmt: skip

    def run_batch(self, batch: VllmBatch, stamps: bool, cancel: threading.Event) -> PassResult:
        """Step ``batch`` to its end; vLLM's stamps cost nothing, so they are always taken."""
        count = self._sent[batch.kind] = self._sent.get(batch.kind, -1) + 1
        done = run_pass(self.engine, batch.prompts, batch.params, cancel, f"{batch.kind}{count}")
        if batch.kind == "pass":
            self.measured.append(done)
        return done

    def synchronize(self) -> None:
        if self.engine.has_unfinished_requests():
            raise RuntimeError("the vLLM engine has requests in flight at a window edge")

    def measured_metrics(self) -> list[dict[str, Any] | None]:
        """vLLM's own metrics of each measured request, in send order."""
        return [record.vllm_metrics for done in self.measured for record in done.records]
