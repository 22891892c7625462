"""Server mode of the PyTorch backend on CPU with lem-tiny: transformers' continuous batching
fed by seeded arrivals; per-request timing from the engine's own stamps; what was actually
sent passes a KS test; closed loop keeps its concurrency; the model is left as it was."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytorch_helpers import RecordingWindow, no_phase, run_config, tiny_config

from lem.protocol.config import LengthDistribution, PromptConfig
from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import from_float32_le
from lem.protocol.workload import SloConfig, WorkloadConfig
from lem.workers.engines.base import Cancelled
from lem.workers.engines.pytorch.engine import PyTorchBackend
from lem.workers.workload.arrivals import exponential_cdf, gaps_s, ks_critical_value, ks_statistic
from lem.workers.workload.request_latency import latency_fields
from tests.lem_run import lem_run_one

RATE_PER_S = 40.0


def served(backend: PyTorchBackend, workload: WorkloadConfig, **overrides: Any) -> Any:
    """(stats, latency fields) of a server-mode lem-tiny run."""
    config = tiny_config(workload=workload, batch_size=4, num_prompts=8, **overrides)
    stats = run_config(backend, config)
    fields = latency_fields(
        stats.timed_requests, stats.window_started_s, stats.duration_s, config.slo,
        stats.latency_unavailable_reason,
    )  # fmt: skip
    return stats, fields


def test_poisson_requests_are_timed_from_the_engines_stamps(backend: PyTorchBackend) -> None:
    workload = WorkloadConfig(mode="server", arrival="poisson", rate_per_s=RATE_PER_S,
                              seed=2, num_requests=160)  # fmt: skip
    prompts = PromptConfig(output_length=LengthDistribution(distribution="uniform", min_tokens=1))
    stats, fields = served(backend, workload, prompts=prompts, slo=SloConfig(ttft_ms=60_000.0))
    records: list[RequestRecord] = fields["requests"]
    assert len(records) == stats.num_prompts >= 160
    assert sum(r.output_tokens for r in records) == stats.output_tokens
    assert stats.repetitions == -(-len(records) // 8) and stats.batches > 0
    for r in records:
        assert len(from_float32_le(r.itl_ms_f32le)) == r.output_tokens - 1
        assert r.ttft_ms < r.e2e_ms or r.output_tokens == 1
        assert r.queue_ms is not None and 0 <= r.queue_ms <= r.ttft_ms
        assert r.scheduled_ms is not None and r.start_ms >= r.scheduled_ms
        assert r.batch_index is None
    # Each request got its own output target (ignore_eos): the prompt set's, cycled.
    assert len({r.output_tokens for r in records}) > 1
    # What the feeding thread actually sent follows the Poisson process (KS, α = 0.01).
    sent_gaps_s = gaps_s([r.start_ms / 1000 for r in records])
    critical = ks_critical_value(len(sent_gaps_s), alpha=0.01)
    assert ks_statistic(sent_gaps_s, exponential_cdf(RATE_PER_S)) < critical
    assert ks_statistic(sent_gaps_s, exponential_cdf(2 * RATE_PER_S)) > critical
    lags_ms = [r.start_ms - (r.scheduled_ms or 0) for r in records]
    assert float(np.median(lags_ms)) < 2.0
    assert fields["goodput"].good_share == 1.0
    assert fields["queue_ms"].count == len(records)


def test_concurrency_keeps_that_many_requests_in_flight(backend: PyTorchBackend) -> None:
    workload = WorkloadConfig(mode="server", arrival="concurrency", concurrency=3,
                              num_requests=24)  # fmt: skip
    stats, fields = served(backend, workload)
    records: list[RequestRecord] = fields["requests"]
    assert len(records) == stats.num_prompts == 24
    spans = [(r.start_ms, r.start_ms + r.e2e_ms) for r in records]
    for start_ms, _ in spans:
        in_flight = sum(1 for s, e in spans if s <= start_ms < e)
        assert 1 <= in_flight <= 3
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) == 3
    assert all(r.scheduled_ms is None for r in records)
    assert stats.output_tokens == 24 * 6


def test_the_model_is_left_as_it_was_and_offline_runs_after(backend: PyTorchBackend) -> None:
    workload = WorkloadConfig(mode="server", arrival="concurrency", concurrency=2,
                              num_requests=4)  # fmt: skip
    served(backend, workload)
    loaded = backend._loaded
    assert loaded is not None and loaded.model.config._attn_implementation == "sdpa"
    assert getattr(loaded.model, "_cached_continuous_batching_manager", None) is None
    stats = run_config(backend, tiny_config(workload=WorkloadConfig(token_timing=True)))
    assert stats.model_reused and stats.output_tokens == 5 * 6
    assert len(stats.timed_requests) == 5


def test_cancel_during_the_window_stops_the_engine(backend: PyTorchBackend) -> None:
    cancel = threading.Event()
    events: list[str] = []

    class CancellingWindow(RecordingWindow):
        def begin(self) -> None:
            super().begin()
            cancel.set()

    workload = WorkloadConfig(mode="server", arrival="poisson", rate_per_s=5.0, num_requests=50)
    config = tiny_config(workload=workload, batch_size=4)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(Cancelled):
        backend.run(config, CancellingWindow(events), cancel, no_phase)
    assert events == ["begin"]
    assert {t.ident for t in threading.enumerate()} <= before  # no generation thread left


def test_lem_run_in_server_mode_stores_what_was_sent(tmp_path: Path) -> None:
    run = lem_run_one(
        tmp_path,
        "name: served\ndevice: cpu\nmodel: {source: builtin, name: lem-tiny}\n"
        "batch_size: 4\nnum_prompts: 8\ninput_tokens: 8\noutput_tokens: 6\n"
        "workload: {mode: server, arrival: gamma, rate_per_s: 40, burstiness: 2, seed: 1,"
        " num_requests: 120}\n",
        timeout_s=240,
    )
    record, summary, requests = run.record, run.summary, run.requests
    assert record.measurement is not None and record.measurement.work.workload_mode == "server"
    assert summary.workload_mode == "server" and "Server mode: # 0" in run.stdout
    assert len(requests) == record.measurement.work.num_prompts >= 120
    from lem.workers.workload.arrivals import gamma_cdf

    sent_gaps_s = gaps_s([r.start_ms / 1000 for r in requests])
    cdf = gamma_cdf(2.0, 1 / (40.0 * 2.0))
    assert ks_statistic(sent_gaps_s, cdf) < ks_critical_value(len(sent_gaps_s), alpha=0.01)


def test_server_counts_eos_unless_ignored(backend: PyTorchBackend) -> None:
    workload = WorkloadConfig(mode="server", arrival="concurrency", concurrency=4,
                              num_requests=8)  # fmt: skip
    served(backend, workload)
    loaded = backend._loaded
    assert loaded is not None
    eos = loaded.eos_token_ids[0]

    def favour_eos(module: Any, inputs: Any, logits: Any) -> Any:
        boosted = logits.clone()
        boosted[..., eos] = 1e4  # EOS becomes every request's greedy choice
        return boosted

    hook = loaded.model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        stopped, fields = served(backend, workload, ignore_eos=False)
        ignored, _ = served(backend, workload, ignore_eos=True)
    finally:
        hook.remove()
    assert stopped.output_tokens == 8 and all(r.tpot_ms is None for r in fields["requests"])
    assert ignored.output_tokens == 8 * 6
