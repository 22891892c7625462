"""PyTorchBackend end to end on CPU with lem-tiny: counts, reuse, window edges, cancel."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import ModelConfig, PromptConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.workers.engines.base import BackendError, Cancelled, CudaVisibilityError
from lem.workers.engines.pytorch import offline
from lem.workers.engines.pytorch.device import CPU_MEMORY_REASON, normalise_gpu_uuid
from lem.workers.engines.pytorch.engine import PyTorchBackend


def test_builtin_run_counts_tokens_exactly(backend: PyTorchBackend) -> None:
    stats = run_config(backend, tiny_config())
    assert stats.batches == 3  # 5 prompts in batches of 2
    assert stats.num_prompts == 5
    assert stats.input_tokens == 5 * 12
    assert stats.output_tokens == 5 * 6
    assert stats.warmup_batches == 1
    assert stats.device == "cpu"
    assert stats.model_reused is False
    assert stats.model_load_count == 1
    assert stats.model_load_s > 0
    assert stats.duration_s > 0
    assert stats.peak_gpu_memory_load_mib is None
    assert stats.peak_gpu_memory_inference_mib is None
    assert stats.gpu_memory_unavailable_reason == CPU_MEMORY_REASON


def test_the_dtype_that_loaded_is_reported_with_auto_resolved(backend: PyTorchBackend) -> None:
    assert run_config(backend, tiny_config()).resolved_dtype == "float32"  # auto on CPU
    bf16 = run_config(backend, tiny_config(model=ModelConfig(dtype="bfloat16")))
    assert bf16.resolved_dtype == "bfloat16" and bf16.model_reused is False
    assert backend._loaded is not None and str(backend._loaded.model.dtype) == "torch.bfloat16"


def test_same_load_key_reuses_and_other_model_reloads(backend: PyTorchBackend) -> None:
    first = run_config(backend, tiny_config())
    loaded = backend._loaded
    # Other prompts and token counts keep the load key: the model is reused.
    second = run_config(backend, tiny_config(output_tokens=3, batch_size=5, num_prompts=5))
    assert second.model_reused is True
    assert second.model_load_count == first.model_load_count == 1
    assert second.model_load_s == 0.0
    assert backend._loaded is loaded
    assert second.output_tokens == 5 * 3
    third = run_config(backend, tiny_config(model=ModelConfig(seed=1)))
    assert third.model_reused is False
    assert third.model_load_count == 2
    assert backend._loaded is not loaded


def test_window_brackets_exactly_the_measured_generate_calls(
    backend: PyTorchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    original = offline.generate_batch

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        events.append("generate")
        return original(*args, **kwargs)

    monkeypatch.setattr(offline, "generate_batch", recording_generate)  # warmup and windows
    run_config(backend, tiny_config(warmup_batches=2), events)
    assert events == ["generate"] * 2 + ["begin"] + ["generate"] * 3 + ["end"]


def test_cancel_before_and_during_the_window(
    backend: PyTorchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    cancel.set()
    events: list[str] = []
    with pytest.raises(Cancelled):
        run_config(backend, tiny_config(), events, cancel)
    assert events == []

    cancel = threading.Event()
    original = offline.generate_batch

    def cancelling_generate(*args: Any, **kwargs: Any) -> Any:
        if "begin" in events:
            cancel.set()  # the coordinator cancels while the first measured batch runs
        return original(*args, **kwargs)

    monkeypatch.setattr(offline, "generate_batch", cancelling_generate)
    with pytest.raises(Cancelled):
        run_config(backend, tiny_config(), events, cancel)
    assert events == ["begin"]


def test_eos_is_counted_unless_ignored(backend: PyTorchBackend) -> None:
    run_config(backend, tiny_config())
    loaded = backend._loaded
    assert loaded is not None
    eos = loaded.eos_token_ids[0]

    def favour_eos(module: Any, inputs: Any, logits: Any) -> Any:
        boosted = logits.clone()
        boosted[..., eos] = 1e4  # EOS becomes every row's greedy choice
        return boosted

    hook = loaded.model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        stopped = run_config(backend, tiny_config(ignore_eos=False))
        assert stopped.output_tokens == 5  # one token, the EOS, per prompt
        ignored = run_config(backend, tiny_config(ignore_eos=True))
        assert ignored.output_tokens == 5 * 6
        assert ignored.model_reused is True
    finally:
        hook.remove()


def test_static_cache_and_eager_attention(backend: PyTorchBackend) -> None:
    config = tiny_config(
        pytorch=PyTorchConfig(cache_implementation="static", attn_implementation="eager"),
    )
    stats = run_config(backend, config)
    assert stats.output_tokens == 5 * 6
    assert backend._loaded is not None
    assert backend._loaded.model.config._attn_implementation == "eager"


def test_file_prompts_run_with_real_input_counts(backend: PyTorchBackend, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n\na much longer prompt than twelve bytes\n", encoding="utf-8")
    config = tiny_config(
        prompts=PromptConfig(source="file", path=str(prompts)), num_prompts=3, batch_size=3
    )
    stats = run_config(backend, config)
    # <bos> + 2 bytes, <bos> + 11 bytes (cut to 12), then "hi" again.
    assert stats.input_tokens == 3 + 12 + 3
    assert stats.output_tokens == 3 * 6


def test_cuda_asked_without_gpu_fails(backend: PyTorchBackend) -> None:
    with pytest.raises(BackendError, match="no GPU"):
        run_config(backend, tiny_config(device="cuda"))


def test_unknown_random_shape_fails_listing_names(backend: PyTorchBackend) -> None:
    config = tiny_config(model=ModelConfig(source="random", name="gpt-17"))
    with pytest.raises(BackendError, match=r"llama-3\.2-1b"):
        run_config(backend, config)


def test_expected_gpus_that_torch_cannot_see_fail() -> None:
    created = PyTorchBackend()
    with pytest.raises(CudaVisibilityError):
        created.initialise(["GPU-12345678-1234-1234-1234-123456789abc"])


def test_gpu_uuid_normalisation() -> None:
    nvml = "GPU-8F6B1C2D-0000-1111-2222-333344445555"
    assert normalise_gpu_uuid(nvml) == "8f6b1c2d-0000-1111-2222-333344445555"
    assert normalise_gpu_uuid("8f6b1c2d-0000-1111-2222-333344445555") == normalise_gpu_uuid(nvml)


def test_importing_the_backend_imports_no_torch() -> None:
    code = (
        "import sys, lem.workers.engines.pytorch.engine, lem.workers.engines.pytorch.shapes;"
        "import lem.workers.engines.pytorch.shapes as s; s.known_shapes();"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_window_repeats_passes_for_min_iterations_and_min_window(backend: PyTorchBackend) -> None:
    events: list[str] = []
    stats = run_config(backend, tiny_config(min_iterations=3), events)
    assert stats.repetitions == 3 and events == ["begin", "end"]
    assert stats.batches == 3 * 3 and stats.num_prompts == 3 * 5
    assert stats.output_tokens == 3 * 5 * 6 and stats.input_tokens == 3 * 5 * 12
    one_pass_s = run_config(backend, tiny_config()).duration_s
    long = run_config(backend, tiny_config(), min_window_s=10 * one_pass_s)
    assert long.duration_s >= 10 * one_pass_s
    assert long.repetitions >= 2 and long.output_tokens == long.repetitions * 5 * 6


def test_prefill_window_runs_one_token_passes_after_the_main_window(
    backend: PyTorchBackend,
) -> None:
    from pytorch_helpers import RecordingWindow, no_phase

    events: list[str] = []
    prefill_events: list[str] = []
    stats = backend.run(
        tiny_config(min_iterations=2), RecordingWindow(events), threading.Event(), no_phase,
        0.0, RecordingWindow(prefill_events),
    )  # fmt: skip
    assert events == ["begin", "end"] and prefill_events == ["begin", "end"]
    assert stats.prefill_repetitions == 2 and stats.prefill_duration_s is not None
    assert 0 < stats.prefill_duration_s < stats.duration_s  # 1 token vs 6 per prompt
    assert stats.output_tokens == 2 * 5 * 6  # the prefill window's tokens are not counted


def test_warmup_until_converged_is_bounded_and_recorded(backend: PyTorchBackend) -> None:
    from lem.protocol.config import WarmupConfig

    impossible = WarmupConfig(until_cv=1e-12, window=3, max_batches=6)
    stats = run_config(backend, tiny_config(warmup_batches=2, warmup=impossible))
    assert stats.warmup_converged is False and stats.warmup_batches == 6
    assert stats.warmup_final_cv is not None and stats.warmup_s > 0
    fixed = run_config(backend, tiny_config(warmup_batches=2))
    assert fixed.warmup_converged is None and fixed.warmup_batches == 2
