"""``VllmBackend`` in server mode, end to end on CPU: the real backend (engine creation,
prompt building, warmup, the feeding loop, token stamps, GenerationStats, engine reuse and
shutdown) against a stand-in ``vllm`` package (tests/vllm/fake_vllm.py). What the real
vLLM accepts of lem's arguments is the contract tests' job; this runs lem's own code."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem.protocol.config import ExperimentConfig, ModelConfig
from lem.protocol.workload import SloConfig, WorkloadConfig
from lem.workers.workload.request_latency import latency_fields
from tests.vllm import fake_vllm


class Window:
    def __init__(self) -> None:
        self.edges: list[str] = []

    def begin(self) -> None:
        self.edges.append("begin")

    def end(self) -> None:
        self.edges.append("end")


@pytest.fixture
def stand_in_vllm(tmp_path: Path) -> Iterator[Any]:
    assert "vllm" not in sys.modules
    fake_vllm.install(tmp_path / "site")
    from vllm.v1.engine.async_llm import AsyncLLM  # the stand-in

    yield AsyncLLM
    sys.path.remove(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def server_config(**workload: Any) -> ExperimentConfig:
    return ExperimentConfig(
        backend="vllm",
        device="cpu",
        model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16"),
        batch_size=4,
        num_prompts=6,
        input_tokens=8,
        output_tokens=5,
        warmup_batches=1,
        min_window_s=0.0,
        workload=WorkloadConfig(mode="server", **workload),
    )


def test_server_mode_runs_end_to_end_and_reuses_then_shuts_its_engine(
    stand_in_vllm: Any,
) -> None:
    from lem.workers.engines.vllm.engine import VllmBackend

    backend = VllmBackend()
    report = backend.initialise([])
    assert report.backend_version == "0.33.0+stand-in" and report.device == "cpu"
    config = server_config(arrival="concurrency", concurrency=3, num_requests=9)
    window, phases = Window(), []
    stats = backend.run(config, window, threading.Event(), lambda p, d="": phases.append(p), 0.0)
    assert window.edges == ["begin", "end"]
    assert phases[-2:] == ["warmup", "measuring"]
    [engine] = stand_in_vllm.started
    assert engine.args.load_format == "dummy" and engine.args.disable_log_stats is False
    requests = stats.timed_requests
    assert len(requests) == 9 == stats.num_prompts  # closed loop: exactly num_requests
    assert all(len(r.token_times_s) == 5 for r in requests)  # one stamp per streamed token
    assert all(r.start_s < r.token_times_s[0] for r in requests)
    stamps = [r.token_times_s for r in requests]
    assert all(a <= b for t in stamps for a, b in itertools.pairwise(t))
    assert stats.output_tokens == 45 and stats.model_reused is False
    assert len(backend.last_vllm_metrics) == 9 and all(backend.last_vllm_metrics)
    fields = latency_fields(requests, stats.window_started_s, stats.duration_s, SloConfig(), None)
    assert fields["ttft_ms"].count == 9 and fields["ttft_ms"].min_ms > 0
    assert fields["itl_ms"].count == 9 * 4  # gaps between a request's 5 tokens
    # the same load key and mode: the engine is kept; closing shuts it down
    again = backend.run(config, Window(), threading.Event(), lambda *_: None, 0.0)
    assert again.model_reused is True and len(stand_in_vllm.started) == 1
    backend.close()
    assert engine.shut_down


def test_open_loop_arrivals_and_a_cancel(stand_in_vllm: Any) -> None:
    from lem.workers.engines.base import Cancelled
    from lem.workers.engines.vllm.engine import VllmBackend

    backend = VllmBackend()
    backend.initialise([])
    config = server_config(arrival="poisson", rate_per_s=200.0, num_requests=12, seed=3)
    stats = backend.run(config, Window(), threading.Event(), lambda *_: None, 0.0)
    scheduled = [r.scheduled_s for r in stats.timed_requests]
    assert len(scheduled) >= 12 and all(s is not None for s in scheduled)
    assert scheduled == sorted(scheduled)  # type: ignore[type-var]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        backend.run(config, Window(), cancel, lambda *_: None, 0.0)
    backend.close()


def test_offline_mode_runs_end_to_end_with_a_prefill_window(stand_in_vllm: Any) -> None:
    import vllm

    from lem.workers.engines.vllm.engine import VllmBackend

    backend = VllmBackend()
    backend.initialise([])
    config = ExperimentConfig(
        backend="vllm", device="cpu",
        model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16"),
        batch_size=2, num_prompts=3, input_tokens=8, output_tokens=4, warmup_batches=2,
        min_window_s=0.0, min_iterations=2,
    )  # fmt: skip
    window, prefill, phases = Window(), Window(), []
    stats = backend.run(
        config, window, threading.Event(), lambda p, d="": phases.append(p), 0.0, prefill
    )
    [llm] = vllm.LLM.made
    assert llm.args.enable_prefix_caching is False and llm.args.load_format == "dummy"
    assert window.edges == prefill.edges == ["begin", "end"]
    assert phases == ["loading", "warmup", "measuring", "measuring"]
    assert (stats.repetitions, stats.num_prompts, stats.output_tokens) == (2, 6, 24)
    assert stats.prefill_repetitions == 2 and stats.prefill_duration_s is not None
    assert stats.warmup_batches == 2 and stats.model_reused is False
    # batches are engine steps: 3 prompts, 2 at a time, 4 tokens each = 8 steps a pass
    assert stats.batches == 16
    assert [len(r.token_times_s) for r in stats.timed_requests] == [4] * 6
    assert len(backend.last_vllm_metrics) == 6 and all(backend.last_vllm_metrics)
    backend.close()
