"""The vLLM backend's server mode on CPU without vLLM: ``serving.py`` driven by a stand-in
``AsyncLLM`` (an async-generator ``generate`` streaming deltas), the ``lem config
validate`` acceptance of vLLM server configs and its refusals. The real AsyncLLM has not
run here (see ``test_vllm_contract`` for its API)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.protocol.latency_stats import request_timings
from lem.protocol.workload import SloConfig
from lem.workers.engines.base import BackendError, Cancelled
from lem.workers.engines.vllm.engine import VllmBackend
from lem.workers.engines.vllm.serving import AsyncEngine, AsyncLlmServer
from lem.workers.workload.prompt_set import PromptSet
from lem.workers.workload.request_latency import latency_fields
from lem.workers.workload.scenarios.server import serve_window
from tests.vllm.test_vllm_engine import Completion, Output, Stats

# vLLM's request stats of every streamed request: 0.5 s between queueing and scheduling
SERVER_STATS = Stats(queued_ts=5.0, scheduled_ts=5.5, first_token_latency=0.75)


@dataclass
class FakeAsyncLlm:
    """vLLM's AsyncLLM.generate: each delta carries ``per_delta`` new tokens (the last
    fewer), then the request finishes with its metrics. ``hang_measured``: a measured
    (not warmup) request sets that event after its first token and never finishes."""

    per_delta: int = 1
    fail: bool = False
    hang_measured: threading.Event | None = None
    requests: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    shut_down: bool = False
    run_ids: set[str] = field(default_factory=set)

    async def generate(
        self, prompt: dict[str, Any], sampling_params: dict[str, Any], request_id: str
    ) -> AsyncIterator[Output]:
        assert sampling_params["output_kind"] == "delta" and prompt["prompt_token_ids"]
        run_id, _, request_id = request_id.partition("-")  # lem's per-run prefix: unique ids
        self.run_ids.add(run_id)
        self.requests.append(request_id)
        if self.fail:
            raise RuntimeError("EngineDeadError: the engine core died\nsecond line")
        target, sent = sampling_params["max_tokens"], 0
        try:
            while sent < target:
                await asyncio.sleep(0)
                new = min(self.per_delta, target - sent)
                sent += new
                yield Output(request_id, [Completion([7] * new)], sent == target, SERVER_STATS)
                if self.hang_measured is not None and not request_id.startswith("warmup"):
                    self.hang_measured.set()
                    await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(request_id)
            raise

    def shutdown(self) -> None:
        self.shut_down = True


class Edges:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self) -> None:
        self.calls.append("begin")

    def end(self) -> None:
        self.calls.append("end")


def server_config(**workload: Any) -> ExperimentConfig:
    data = {
        "backend": "vllm", "model": {"source": "builtin"}, "batch_size": 2,
        "warmup_batches": 2, "num_prompts": 3,
        "workload": {"mode": "server", **workload},
    }  # fmt: skip
    return msgspec.convert(data, ExperimentConfig)


def server_of(fake: FakeAsyncLlm, targets: list[int]) -> AsyncLlmServer:
    prompts = [{"prompt_token_ids": list(range(3, 3 + 4 + i))} for i in range(len(targets))]
    params = [{"max_tokens": t, "output_kind": "delta"} for t in targets]
    prompt_set = PromptSet([p["prompt_token_ids"] for p in prompts], targets, "h", "test")
    return AsyncLlmServer(AsyncEngine(lambda: fake), prompt_set, prompts, params)


def no_phase(phase: str, detail: str = "") -> None:
    del phase, detail


def run_served(fake: FakeAsyncLlm, config: ExperimentConfig, targets: list[int]) -> Any:
    """The served window and vLLM's metrics of its requests."""
    server = server_of(fake, targets)
    edges, phases = Edges(), []
    try:
        with server:
            served = serve_window(server, config, edges, threading.Event(),
                                  lambda p, d="": phases.append(p), 0.0)  # fmt: skip
    finally:
        server.engine.shutdown()
    assert edges.calls == ["begin", "end"] and phases.count("measuring") == 1
    return served, server.measured_metrics()


def test_closed_loop_stamps_one_time_per_token_in_order() -> None:
    fake = FakeAsyncLlm(per_delta=2)
    served, _ = run_served(fake, server_config(arrival="concurrency", concurrency=2,
                                            num_requests=5), [3, 5, 4])  # fmt: skip
    assert [r.input_tokens for r in served.requests] == [4, 5, 6, 4, 5]
    assert [len(r.token_times_s) for r in served.requests] == [3, 5, 4, 3, 5]
    assert [r.pass_index for r in served.requests] == [0, 0, 0, 1, 1]
    for request in served.requests:
        stamps = list(request.token_times_s)
        assert request.start_s <= stamps[0] and stamps == sorted(stamps)
        assert stamps[0] == stamps[1]  # two tokens of one delta share its arrival stamp
        assert request.scheduled_s is None and request.queued_s == 0.5
    assert served.started_s <= served.requests[0].start_s
    # warmup: 2 batches of batch_size 2, sent before and not counted in the window
    assert fake.requests[:4] == ["warmup0-0", "warmup0-1", "warmup1-2", "warmup1-3"]
    assert sorted(fake.requests[4:], key=int) == ["0", "1", "2", "3", "4"]
    assert (served.warmup.batches, fake.cancelled) == (2, [])
    assert len(fake.run_ids) == 1 and len(next(iter(fake.run_ids))) == 8


def test_open_loop_poisson_sends_num_requests_at_their_scheduled_times() -> None:
    fake = FakeAsyncLlm()
    config = server_config(arrival="poisson", rate_per_s=2000.0, num_requests=7, seed=3)
    served, vllm_metrics = run_served(fake, config, [2, 3, 2])
    assert len(served.requests) == 7
    scheduled = [r.scheduled_s for r in served.requests]
    assert all(s is not None for s in scheduled) and scheduled == sorted(scheduled)
    assert all(r.start_s >= (r.scheduled_s or 0.0) for r in served.requests)
    assert vllm_metrics[0] == {"queued_ts": 5.0, "scheduled_ts": 5.5,
                               "first_token_latency": 0.75}  # fmt: skip
    assert len(vllm_metrics) == 7


def test_ttft_and_itl_come_out_of_the_stamps() -> None:
    served, _ = run_served(FakeAsyncLlm(), server_config(arrival="concurrency", concurrency=1,
                                                      num_requests=3), [4])  # fmt: skip
    request = served.requests[1]
    timing = request_timings(request.start_s, request.token_times_s, request.queued_s)
    stamps = list(request.token_times_s)
    assert timing.ttft_ms == pytest.approx((stamps[0] - request.start_s) * 1000)
    assert timing.itls_ms == pytest.approx([(b - a) * 1000 for a, b in itertools.pairwise(stamps)])
    fields = latency_fields(served.requests, served.started_s, served.duration_s, SloConfig(),
                            None)  # fmt: skip
    assert len(fields["requests"]) == 3 and fields["latency_unavailable_reason"] is None
    assert fields["queue_ms"] is not None


def test_cancel_stops_the_window_and_cancels_requests_in_flight() -> None:
    cancel = threading.Event()
    fake = FakeAsyncLlm(hang_measured=cancel)  # the first measured token cancels the run
    server, edges = server_of(fake, [3]), Edges()
    config = server_config(arrival="concurrency", concurrency=2, num_requests=4)
    try:
        with pytest.raises(Cancelled), server:
            serve_window(server, config, edges, cancel, no_phase, 0.0)
    finally:
        server.engine.shutdown()
    assert edges.calls == ["begin"]  # no end: the window is dropped
    assert sorted(fake.cancelled) == ["0", "1"]


def test_a_failed_request_is_a_one_line_backend_error() -> None:
    server = server_of(FakeAsyncLlm(fail=True), [2])
    try:
        with pytest.raises(BackendError) as failed, server:
            serve_window(server, server_config(arrival="concurrency", concurrency=1), Edges(),
                         threading.Event(), no_phase, 0.0)  # fmt: skip
    finally:
        server.engine.shutdown()
    assert str(failed.value) == (
        "a vLLM request failed: RuntimeError: EngineDeadError: the engine core died"
    )


def test_the_engine_is_built_on_its_loop_thread_and_shut_down_with_it() -> None:
    where: list[str] = []

    def make() -> FakeAsyncLlm:
        asyncio.get_running_loop()  # vLLM starts its output handler on the running loop
        where.append(threading.current_thread().name)
        return FakeAsyncLlm()

    started = AsyncEngine(make)
    assert where == ["lem-vllm-loop"]
    backend = VllmBackend()
    backend._llm, backend._key = started, ("key", "server")
    backend.close()  # a kept server engine is shut down, its loop closed
    assert started.engine.shut_down and started.loop.loop.is_closed()


def lem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lem.coordinator", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


SERVER = "name: s\nexperiment:\n  backend: vllm\n  model: {source: builtin}\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("workload: {mode: server, arrival: poisson, rate_per_s: 4}\n", None),
        ("gpu_count: 2\nworkload: {mode: server, arrival: concurrency, concurrency: 8}\n", None),
        ("measure_prefill: true\nworkload: {mode: server, arrival: concurrency, "
         "concurrency: 2}\n", "measure_prefill: is for workload.mode 'offline' only"),
        ("device: cpu\nvllm: {pipeline_parallel_size: 2}\nworkload: {mode: server, "
         "arrival: poisson, rate_per_s: 1}\n",
         "vllm.pipeline_parallel_size: must be 1 with device 'cpu', got 2"),
        ("workload: {mode: server}\n", "workload.arrival: is required"),
    ],
)  # fmt: skip
def test_lem_config_validate_accepts_vllm_server_and_refuses_in_one_line(
    extra: str, expected: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(SERVER + "".join(f"  {line}\n" for line in extra.splitlines()))
    done = lem("config", "validate", str(path))
    if expected is None:
        assert done.returncode == 0, done.stderr
        return
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("lem: error: ") and expected in lines[0], lines[0]
