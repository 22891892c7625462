"""Token timestamps of real ``generate`` calls on lem-tiny (CPU): the loop clock stamps once on
the loop's entry then once after each decoding step, on the generating thread, and leaves the
model as it found it (also when generate raises); a count that differs fails the run; per
request TTFT < e2e and exactly output tokens − 1 ITLs (each row stopped at its own target);
no clock at all when timing is off."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import pytest
import torch
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import LengthDistribution, PromptConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.latency_stats import from_float32_le
from lem.protocol.workload import SloConfig, WorkloadConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch import offline
from lem.workers.engines.pytorch.engine import PyTorchBackend, prepare_batches
from lem.workers.engines.pytorch.generation import generate_batch
from lem.workers.engines.pytorch.loader import LoadedModel
from lem.workers.engines.pytorch.prompts import PreparedBatch
from lem.workers.engines.pytorch.token_clock import LOOP_TEST, LoopClock, StepClock
from lem.workers.workload.prompt_set import PromptSet
from lem.workers.workload.request_latency import latency_fields
from lem.workers.workload.scenarios.offline import TIMING_OFF_REASON

UNIFORM_OUT = LengthDistribution(distribution="uniform", min_tokens=1, max_tokens=9)
TARGETS = [2, 7, 4, 5]  # one batch of 4 rows, each stopped at its own target


def one_batch(
    backend: PyTorchBackend, cache: Literal["dynamic", "static"] = "dynamic"
) -> tuple[LoadedModel, PreparedBatch, Any]:
    """lem-tiny loaded, and one batch of 4 rows with per-row targets ``TARGETS``."""
    config = tiny_config(
        num_prompts=4, batch_size=4, pytorch=PyTorchConfig(cache_implementation=cache)
    )
    run_config(backend, config)
    loaded = backend._loaded
    assert loaded is not None
    prompt_set = PromptSet([[5 + i] * (3 + i) for i in range(4)], TARGETS, "h", "test")
    [batch], generation = prepare_batches(config, loaded, prompt_set)
    return loaded, batch, generation


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_the_loop_clock_stamps_the_entry_then_each_step_after_its_forward_on_this_thread(
    backend: PyTorchBackend, cache: Literal["dynamic", "static"], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, batch, generation = one_batch(backend, cache)
    model = loaded.model
    with torch.inference_mode():
        unclocked = generate_batch(model, batch, generation)
    events: list[tuple[str, float, int]] = []  # (what, perf_counter s, thread)
    loop_test = getattr(type(model), LOOP_TEST)

    def recorded_loop_test(self: Any, *args: Any, **kwargs: Any) -> bool:
        events.append(("test", 0.0, threading.get_ident()))
        result: bool = loop_test(self, *args, **kwargs)
        return result

    monkeypatch.setattr(type(model), LOOP_TEST, recorded_loop_test)

    def after_forward(module: Any, inputs: Any, output: Any) -> None:
        events.append(("forward", time.perf_counter(), threading.get_ident()))

    hook = model.register_forward_hook(after_forward)
    try:
        with torch.inference_mode(), LoopClock.attached(model) as clock:
            assert vars(model)[LOOP_TEST] is not None  # wrapped on the instance only
            sequences = generate_batch(model, batch, generation)
    finally:
        hook.remove()
    assert LOOP_TEST not in vars(model)  # the class's method is back
    assert torch.equal(sequences, unclocked)  # the clock changed nothing generated
    columns = sequences.shape[1] - batch.input_width_tokens
    assert columns == max(TARGETS)
    # The prefill's forward, the loop's entry, step 1 (on the prefill's logits), then each
    # later step's forward before its test: columns + 1 tests, columns forwards.
    kinds = [kind for kind, _, _ in events]
    assert kinds == ["forward", "test", "test"] + ["forward", "test"] * (columns - 1)
    assert {thread for _, _, thread in events} == {threading.get_ident()}
    assert len(clock.times_s) == columns + 1 and clock.times_s == sorted(clock.times_s)
    # The clock's own stamps sit where the tests are: merged by time with the forwards'
    # ends, they give the same order.
    forwards = [("forward", at_s) for kind, at_s, _ in events if kind == "forward"]
    merged = sorted(forwards + [("test", at_s) for at_s in clock.times_s], key=lambda e: e[1])
    assert [kind for kind, _ in merged] == kinds
    assert clock.step_times_s(columns) == clock.times_s[1:]
    with pytest.raises(ValueError, match="tested its condition 8 time"):
        clock.step_times_s(columns + 1)


def test_the_loop_and_streamer_clocks_agree_step_by_step(backend: PyTorchBackend) -> None:
    """On one call: the streamer's ``put`` comes in the stop check just before the loop's
    test, so each loop stamp lies between the streamer's stamp of its step and the next."""
    loaded, batch, generation = one_batch(backend)
    streamer = StepClock()
    with torch.inference_mode(), LoopClock.attached(loaded.model) as clock:
        sequences = generate_batch(loaded.model, batch, generation, streamer)
    columns = sequences.shape[1] - batch.input_width_tokens
    loop_s, streamed_s = clock.step_times_s(columns), streamer.step_times_s(columns)
    assert len(loop_s) == len(streamed_s) == columns == max(TARGETS)
    assert all(s_s <= l_s for s_s, l_s in zip(streamed_s, loop_s, strict=True))
    assert all(l_s <= s_s for l_s, s_s in zip(loop_s, streamed_s[1:], strict=False))
    with pytest.raises(ValueError, match="streamed 7 decoding step"):
        streamer.step_times_s(columns + 1)


def test_the_wrapper_is_removed_when_generate_raises(backend: PyTorchBackend) -> None:
    loaded, batch, generation = one_batch(backend)
    model = loaded.model
    forwards = 0

    def fail_third(module: Any, inputs: Any, output: Any) -> None:
        nonlocal forwards
        forwards += 1
        if forwards == 3:
            raise RuntimeError("forward failed")

    hook = model.register_forward_hook(fail_third)
    try:
        with (
            pytest.raises(RuntimeError, match="forward failed"),
            torch.inference_mode(),
            LoopClock.attached(model) as clock,
        ):
            generate_batch(model, batch, generation)
    finally:
        hook.remove()
    assert LOOP_TEST not in vars(model)
    assert len(clock.times_s) == 3  # entry, after step 1, after step 2; step 3's forward raised
    with pytest.raises(ValueError, match="tested its condition 3 time"):
        clock.step_times_s(max(TARGETS))
    # A wrapper someone else set on the instance is put back, not deleted.
    theirs = vars(model)[LOOP_TEST] = getattr(model, LOOP_TEST)
    try:
        with torch.inference_mode(), LoopClock.attached(model) as clock:
            sequences = generate_batch(model, batch, generation)
            with pytest.raises(ValueError, match="call ended: False"):
                clock.step_times_s(max(TARGETS))  # the right count, but read while attached
        assert vars(model)[LOOP_TEST] is theirs
        assert len(clock.step_times_s(sequences.shape[1] - batch.input_width_tokens)) == 7
    finally:
        del vars(model)[LOOP_TEST]


def test_the_count_check_fails_the_run_when_the_loop_differs(
    backend: PyTorchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transformers whose loop tests its condition once more than it generates columns
    (simulated: one extra test before each call) fails the cycle instead of mis-timing."""
    original = offline.generate_batch

    def one_extra_test(model: Any, *args: Any, **kwargs: Any) -> Any:
        getattr(model, LOOP_TEST)(False, False, device=torch.device("cpu"))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(offline, "generate_batch", one_extra_test)
    with pytest.raises(BackendError, match=r"tested its condition 8 time\(s\) for 6 generated"):
        measured(backend, output_tokens=6)
    with (
        pytest.raises(ValueError, match="has no _has_unfinished_sequences"),
        LoopClock.attached(torch.nn.Linear(1, 1)),
    ):
        pass


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


@pytest.mark.parametrize("clock", ["loop", "streamer"])
def test_every_request_has_ttft_below_e2e_and_output_tokens_minus_one_itls(
    backend: PyTorchBackend, clock: Literal["loop", "streamer"]
) -> None:
    backend.token_clock = clock
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


def test_timing_off_runs_no_clock_and_reports_why(
    backend: PyTorchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, bool]] = []  # (streamer, loop test wrapped) of every generate call
    original = offline.generate_batch

    def recording(model: Any, *args: Any, **kwargs: Any) -> Any:
        streamer = args[2] if len(args) > 2 else kwargs.get("streamer")
        calls.append((streamer, LOOP_TEST in vars(model)))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(offline, "generate_batch", recording)
    stats, fields = measured(backend, workload=WorkloadConfig(token_timing=False))
    assert calls and all(c == (None, False) for c in calls)
    assert stats.timed_requests == [] and fields["requests"] == []
    assert fields["latency_unavailable_reason"] == TIMING_OFF_REASON
    assert "ttft_ms" not in fields  # the Measurement keeps its None defaults
    calls.clear()
    measured(backend)  # the loop clock on every call, warmup's included
    assert calls and all(c == (None, True) for c in calls)
    assert backend._loaded is not None and LOOP_TEST not in vars(backend._loaded.model)
    calls.clear()
    backend.token_clock = "streamer"
    measured(backend)
    assert calls and all(isinstance(s, StepClock) and not wrapped for s, wrapped in calls)
    calls.clear()
    backend.token_clock = "loop"
    default, _ = measured(backend, workload=WorkloadConfig())  # offline default: the loop clock
    assert calls and all(c == (None, True) for c in calls) and default.timed_requests


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
