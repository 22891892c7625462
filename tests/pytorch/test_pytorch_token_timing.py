"""Token timestamps of real ``generate`` calls on lem-tiny (CPU): one clock tick per decoding
step on the generating thread, per-request TTFT < e2e, exactly output tokens − 1 ITLs per
request (each row stopped at its own target), and no streamer at all when timing is off."""

from __future__ import annotations

import threading
from typing import Any, Literal

import pytest
import torch
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import LengthDistribution, PromptConfig, PyTorchConfig
from lem.protocol.workload import SloConfig, WorkloadConfig
from lem.workers.prompt_set import PromptSet
from lem.workers.pytorch import engine, passes
from lem.workers.pytorch.engine import TIMING_OFF_REASON, PyTorchBackend, prepare_batches
from lem.workers.pytorch.generation import generate_batch
from lem.workers.pytorch.token_clock import StepClock
from lem.workers.request_latency import from_float32_le, latency_fields

UNIFORM_OUT = LengthDistribution(distribution="uniform", min_tokens=1, max_tokens=9)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_the_clock_ticks_once_for_the_prompt_then_once_per_step_on_this_thread(
    backend: PyTorchBackend, cache: Literal["dynamic", "static"]
) -> None:
    config = tiny_config(
        num_prompts=4, batch_size=4, pytorch=PyTorchConfig(cache_implementation=cache)
    )
    run_config(backend, config)
    loaded = backend._loaded
    assert loaded is not None
    targets = [2, 7, 4, 5]
    prompt_set = PromptSet([[5 + i] * (3 + i) for i in range(4)], targets, "h", "test")
    [batch], generation = prepare_batches(config, loaded, prompt_set)
    threads: list[int] = []

    class ThreadClock(StepClock):
        def put(self, value: Any) -> None:
            threads.append(threading.get_ident())
            super().put(value)

    clock = ThreadClock()
    with torch.inference_mode():
        sequences = generate_batch(loaded.model, batch, generation, clock)
    generated_columns = sequences.shape[1] - batch.input_width_tokens
    assert generated_columns == max(targets)
    assert len(clock.times_s) == 1 + generated_columns and clock.ended
    assert set(threads) == {threading.get_ident()}  # the generating thread, no other
    assert clock.times_s == sorted(clock.times_s)
    assert clock.step_times_s(generated_columns) == clock.times_s[1:]
    with pytest.raises(ValueError, match="streamed 7 decoding step"):
        clock.step_times_s(generated_columns + 1)


def measured(backend: PyTorchBackend, **overrides: Any) -> Any:
    """The GenerationStats and latency fields of a lem-tiny run with ``overrides`` (token
    timing on unless ``overrides`` say otherwise: offline it is off by default)."""
    overrides.setdefault("workload", WorkloadConfig(token_timing=True))
    config = tiny_config(**overrides)
    stats = run_config(backend, config)
    fields = latency_fields(
        stats.timed_requests, stats.window_started_s, stats.duration_s, config.slo,
        stats.latency_unavailable_reason,
    )  # fmt: skip
    return stats, fields


def test_every_request_has_ttft_below_e2e_and_output_tokens_minus_one_itls(
    backend: PyTorchBackend,
) -> None:
    prompts = PromptConfig(seed=4, output_length=UNIFORM_OUT)
    stats, fields = measured(
        backend, num_prompts=7, batch_size=3, output_tokens=9, prompts=prompts, min_iterations=2
    )
    records = fields["requests"]
    assert len(records) == stats.num_prompts == 14  # two passes of 7 prompts
    assert sum(r.output_tokens for r in records) == stats.output_tokens
    assert len({r.output_tokens for r in records}) > 1  # rows stopped at their own targets
    for record in records:
        itls_ms = from_float32_le(record.itl_ms_f32le)
        assert len(itls_ms) == record.output_tokens - 1
        assert 0 < record.ttft_ms < record.e2e_ms or record.output_tokens == 1
        assert record.ttft_ms <= record.e2e_ms
        assert record.queue_ms is not None and record.queue_ms >= 0
        if record.output_tokens > 1:
            assert record.tpot_ms == pytest.approx(
                (record.e2e_ms - record.ttft_ms) / (record.output_tokens - 1)
            )
            assert sum(itls_ms) == pytest.approx(record.e2e_ms - record.ttft_ms, rel=1e-5)
    # Offline: a pass's first batch starts at once; later batches queue behind earlier ones.
    first, later = records[0], [r for r in records if r.pass_index == 0 and r.batch_index == 2]
    assert first.queue_ms is not None and first.queue_ms < later[0].ttft_ms
    assert all(r.queue_ms is not None and r.queue_ms > first.e2e_ms for r in later)
    assert [r.pass_index for r in records] == [0] * 7 + [1] * 7
    assert [r.batch_index for r in records[:7]] == [0, 0, 0, 1, 1, 1, 2]
    assert fields["itl_ms"].count == sum(r.output_tokens - 1 for r in records)
    assert fields["ttft_ms"].count == fields["e2e_ms"].count == 14


def test_input_tokens_per_request_are_the_real_ones(backend: PyTorchBackend) -> None:
    prompts = PromptConfig(input_length=LengthDistribution(distribution="uniform", min_tokens=2))
    stats, fields = measured(backend, prompts=prompts)
    assert sum(r.input_tokens for r in fields["requests"]) == stats.input_tokens


def test_goodput_from_the_slo(backend: PyTorchBackend) -> None:
    _, everything = measured(backend, slo=SloConfig(ttft_ms=60_000.0, tpot_ms=60_000.0))
    assert everything["goodput"].good_share == 1.0
    _, nothing = measured(backend, slo=SloConfig(ttft_ms=1e-6))
    assert nothing["goodput"].good_share == 0.0
    assert nothing["goodput"].good_output_tokens_per_s == 0.0
    _, no_slo = measured(backend)
    assert no_slo["goodput"] is None


def test_timing_off_passes_no_streamer_and_reports_why(
    backend: PyTorchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamers: list[Any] = []
    original = passes.generate_batch

    def recording(*args: Any, **kwargs: Any) -> Any:
        streamers.append(args[3] if len(args) > 3 else kwargs.get("streamer"))
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "generate_batch", recording)
    monkeypatch.setattr(engine, "generate_batch", recording)
    stats, fields = measured(backend, workload=WorkloadConfig(token_timing=False))
    assert streamers and all(s is None for s in streamers)
    assert stats.timed_requests == [] and fields["requests"] == []
    assert fields["latency_unavailable_reason"] == TIMING_OFF_REASON
    assert "ttft_ms" not in fields  # the Measurement keeps its None defaults
    streamers.clear()
    measured(backend)
    assert streamers and all(isinstance(s, StepClock) for s in streamers)
    streamers.clear()
    default, _ = measured(backend, workload=WorkloadConfig())  # offline default: off
    assert streamers and all(s is None for s in streamers) and default.timed_requests == []


def test_eos_rows_count_to_their_first_eos(backend: PyTorchBackend) -> None:
    """With EOS honoured, a row's tokens (and so its ITLs) end at its first EOS."""
    run_config(backend, tiny_config())
    loaded = backend._loaded
    assert loaded is not None
    eos = loaded.eos_token_ids[0]

    def force_eos(module: Any, inputs: Any, output: Any) -> Any:
        output.logits[0, -1, :] = -1e9
        output.logits[0, -1, eos] = 1e9  # row 0 of every batch says EOS at once
        return output

    hook = loaded.model.register_forward_hook(force_eos)
    try:
        stats, fields = measured(backend, ignore_eos=False, num_prompts=4, batch_size=2)
    finally:
        hook.remove()
    counts = [r.output_tokens for r in fields["requests"]]
    assert counts == [1, 6, 1, 6] and sum(counts) == stats.output_tokens
    assert all(r.tpot_ms is None for r in fields["requests"] if r.output_tokens == 1)
