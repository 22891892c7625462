"""Timed passes of the vLLM backend: the prompt set through vLLM's engine step loop.

Not yet run on a GPU: written against vLLM's ``LLMEngine`` API (``add_request``,
``step``, ``has_unfinished_requests``, ``abort_request``), the same loop that
``LLM.generate`` runs inside, so lem's loop adds no engine work. Each ``step`` returns the
requests that got new tokens; lem stamps their arrival on the host (``perf_counter``)
right then: those are the token times, one per output token, with no estimate. When one
step brings a request several tokens, they share the step's stamp (they reached the host
together). vLLM's own request metrics (``RequestOutput.metrics``, when vLLM fills it) are
kept beside lem's, as vLLM reports them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lem.workers.engines.base import Cancelled, MeasurementWindow, TimedRequest


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
    """One pass over the prompt set: when it began (perf_counter s), its requests in send
    order and the engine steps it took."""

    started_s: float
    records: list[RequestRecord]
    engine_steps: int


@dataclass(frozen=True)
class TimedVllmPasses:
    """Passes inside one measured window: its duration (s), start (perf_counter s) and
    passes in order."""

    duration_s: float
    started_s: float
    passes: list[PassResult]


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


def timed_vllm_passes(
    engine: Any,
    prompts: list[Any],
    params: list[Any],
    window: MeasurementWindow,
    cancel: threading.Event,
    min_window_s: float,
    min_iterations: int,
) -> TimedVllmPasses:
    """Passes over the prompt set until ``min_window_s`` seconds and ``min_iterations``
    passes are both reached. The window's edges are exact without a device sync in this
    process (vLLM's GPU work runs in its engine process): at ``begin`` the engine has no
    request, and at ``end`` the last token of the last request has reached the host."""
    if engine.has_unfinished_requests():
        raise RuntimeError("the vLLM engine has requests before the measured window")
    passes: list[PassResult] = []
    window.begin()
    started_s = time.perf_counter()
    while len(passes) < min_iterations or time.perf_counter() - started_s < min_window_s:
        passes.append(run_pass(engine, prompts, params, cancel, f"pass{len(passes)}"))
    duration_s = time.perf_counter() - started_s
    window.end()
    return TimedVllmPasses(duration_s, started_s, passes)


def timed_requests(passes: list[PassResult]) -> list[TimedRequest]:
    """lem's timed requests of the measured passes (send order): every request of a pass
    was sent at the pass's start; ``queued_s`` is vLLM's queue time when it reported one."""
    requests = []
    for pass_index, done in enumerate(passes):
        for record in done.records:
            requests.append(
                TimedRequest(
                    pass_index=pass_index,
                    batch_index=None,
                    input_tokens=record.input_tokens,
                    start_s=done.started_s,
                    token_times_s=list(record.token_times_s),
                    queued_s=queued_from_metrics(record.vllm_metrics),
                )
            )
    return requests
