"""The server scenario, for every engine with a server mode: warm up with batches of
``batch_size`` requests sent together, then, inside the measured window, send the
workload's requests by its arrival process (open loop) or concurrency limit (closed
loop, ``lem.workers.workload.server_loop``) until every one has finished, and the
``GenerationStats`` of the run. Per-token times are the engine's own stamps, taken where
its tokens are produced or reach lem (``ServerSession.timed``).

``repetitions`` counts the passes over the prompt set that requests were taken from;
``batches`` the engine's steps in the window when it reports them, else those passes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import (
    Cancelled,
    Engine,
    GenerationStats,
    LoadInfo,
    MeasurementWindow,
    PhaseCallback,
    ServerSession,
    TimedRequest,
)
from lem.workers.workload.arrivals import arrival_plan
from lem.workers.workload.scenarios.window import measured_window
from lem.workers.workload.server_loop import feed
from lem.workers.workload.warmup import WarmupOutcome, warm_up

WARMUP_POLL_S = 0.1  # how long one wait for finished warmup requests blocks at most (s)


@dataclass(frozen=True)
class ServedWindow:
    """What one server-mode window measured. Seconds, counts, perf_counter times;
    ``engine_steps`` None when the engine does not report its steps."""

    duration_s: float
    started_s: float
    requests: list[TimedRequest]
    engine_steps: int | None
    warmup: WarmupOutcome


def warm_up_server(
    session: ServerSession, config: ExperimentConfig, cancel: threading.Event
) -> WarmupOutcome:
    """Warmup batches of ``batch_size`` requests sent together, each waited for."""
    size = config.batch_size

    def batch(index: int) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled during warmup")
        for row in range(size):
            session.submit(index * size + row, None, prefix=f"warmup{index}-")
        left = size
        while left > 0:
            if cancel.is_set():
                raise Cancelled("cancelled during warmup")
            left -= session.wait_finished(WARMUP_POLL_S)

    warmed = warm_up(batch, config.warmup_batches, config.warmup)
    session.clear()
    return warmed


def serve_window(
    session: ServerSession,
    config: ExperimentConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    min_window_s: float,
) -> ServedWindow:
    """Warm ``session`` up, then send the workload's requests inside ``window`` until all
    have finished. Raises ``Cancelled`` when ``cancel`` is set (the window is then not
    closed)."""
    workload = config.workload
    num_requests = workload.num_requests or config.num_prompts
    on_phase("warmup", f"{config.warmup_batches} batch(es) of {config.batch_size} requests")
    warmed = warm_up_server(session, config, cancel)
    if cancel.is_set():
        raise Cancelled("cancelled before the measured window")
    on_phase(
        "measuring",
        f"server: {workload.arrival} arrivals, at least {num_requests} requests and "
        f"{min_window_s:g} s",
    )
    with measured_window(window, session.synchronize) as clock:
        steps_before = session.engine_steps()
        sent = feed(
            session, arrival_plan(workload), num_requests, min_window_s, clock.started_s, cancel
        )
        steps_after = session.engine_steps()
    steps = None if steps_before is None or steps_after is None else steps_after - steps_before
    return ServedWindow(clock.duration_s, clock.started_s, session.timed(sent), steps, warmed)


def run_server(
    engine: Engine,
    load: LoadInfo,
    config: ExperimentConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    min_window_s: float,
) -> GenerationStats:
    """Server mode on the loaded ``engine``: a session, its warmup and measured window."""
    with engine.serve(config) as session:
        served = serve_window(session, config, window, cancel, on_phase, min_window_s)
        prompt_set = session.prompt_set
    memory = engine.memory()
    requests = served.requests
    passes = -(-len(requests) // len(prompt_set.prompt_ids))
    return GenerationStats(
        duration_s=served.duration_s,
        repetitions=passes,
        batches=served.engine_steps if served.engine_steps is not None else passes,
        num_prompts=len(requests),
        input_tokens=sum(request.input_tokens for request in requests),
        output_tokens=sum(len(request.token_times_s) for request in requests),
        warmup_batches=served.warmup.batches,
        warmup_s=served.warmup.duration_s,
        warmup_converged=served.warmup.converged,
        warmup_final_cv=served.warmup.final_cv,
        peak_gpu_memory_load_mib=memory.peak_load_mib,
        peak_gpu_memory_inference_mib=memory.peak_inference_mib,
        gpu_memory_unavailable_reason=memory.unavailable_reason,
        model_load_s=load.model_load_s,
        model_reused=load.model_reused,
        model_load_count=load.model_load_count,
        device=load.device,
        resolved_dtype=load.dtype,
        prompt_set_hash=prompt_set.prompt_set_hash,
        prompt_source=prompt_set.source_description,
        timed_requests=requests,
        window_started_s=served.started_s,
    )
