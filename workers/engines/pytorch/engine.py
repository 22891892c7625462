"""``PyTorchBackend``: the transformers ``model.generate`` backend of lem workers.

Importing this module imports neither torch nor transformers; ``initialise`` does.
One loaded model is kept, keyed by ``load_key(config)``, and reused by later runs with the
same key. Everything avoidable (prompt tensors on the device, the GenerationConfig) is
built before the measured window; inside it only ``model.generate`` runs.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from lem.protocol.config import ExperimentConfig, load_key
from lem.protocol.workload import timing_enabled
from lem.workers.engines.base import (
    BackendError,
    Cancelled,
    DeviceReport,
    GenerationStats,
    MeasurementWindow,
    PhaseCallback,
)
from lem.workers.engines.pytorch import device as devices
from lem.workers.engines.pytorch.generation import (
    build_generation_config,
    generate_batch,
    new_tokens_per_row,
)
from lem.workers.engines.pytorch.loader import LoadedModel, load_model
from lem.workers.engines.pytorch.passes import timed_generate, timed_passes, timed_requests
from lem.workers.engines.pytorch.prompts import PreparedBatch, build_prompt_set, make_batches
from lem.workers.workload.warmup import WarmupOutcome, warm_up

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from lem.workers.engines.pytorch.token_clock import ClockName
    from lem.workers.workload.prompt_set import PromptSet


TIMING_OFF_REASON = "token timing off (workload.token_timing: false)"


def choose_device(config: ExperimentConfig, gpu_count: int) -> str:
    """ "cuda" when the worker has GPUs and ``config.device`` allows it, else "cpu"."""
    if config.device == "cpu":
        return "cpu"
    if gpu_count > 0:
        return "cuda"
    if config.device == "cuda":
        raise BackendError("device 'cuda' was asked for but this worker has no GPU")
    return "cpu"


def prepare_batches(
    config: ExperimentConfig, loaded: LoadedModel, prompt_set: PromptSet | None = None
) -> tuple[list[PreparedBatch], GenerationConfig]:
    """The batches (tensors on the model's device) and GenerationConfig of ``config``, for
    ``prompt_set`` (default: built from ``config``). ``max_new_tokens`` is the largest
    per-prompt target; batches with smaller targets carry a per-row stopping criterion."""
    if prompt_set is None:
        prompt_set = build_prompt_set(config, loaded.tokenizer, loaded.vocab_size)
    targets = prompt_set.output_tokens_per_prompt
    batches = make_batches(
        prompt_set.prompt_ids, config.batch_size, loaded.pad_token_id, loaded.device,
        targets, max(targets),
    )  # fmt: skip
    generation = build_generation_config(
        config, loaded.pad_token_id, loaded.eos_token_ids, max(targets)
    )
    return batches, generation


class PyTorchBackend:
    """The Backend protocol over transformers. One instance per worker process.

    ``token_clock`` is the offline token clock (``token_clock``): ``loop``, lem's, or
    ``streamer``, the costlier former one, which a benchmark may set to compare them."""

    name = "pytorch"

    def __init__(self) -> None:
        self.token_clock: ClockName = "loop"
        self._gpu_uuids: list[str] = []
        self._initialised = False
        self._loaded: LoadedModel | None = None
        self._loaded_key: str | None = None
        self._load_peak_memory_mib: float | None = None
        self.model_load_count = 0  # loads in this process, cumulative

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        """Import torch/transformers and check CUDA sees exactly ``expected_gpu_uuids``."""
        import torch
        import transformers

        gpu_uuids = devices.check_cuda_visibility(expected_gpu_uuids) if expected_gpu_uuids else []
        self._gpu_uuids = gpu_uuids
        self._initialised = True
        return DeviceReport(
            device="cuda" if gpu_uuids else "cpu",
            gpu_uuids=gpu_uuids,
            cuda_version=torch.version.cuda,
            backend_version=transformers.__version__,
            packages=devices.package_versions(),
        )

    def _ensure_model(self, config: ExperimentConfig, device: str) -> tuple[LoadedModel, bool]:
        """The model of ``config``: the kept one when its load key matches, else a new load."""
        key = load_key(config)
        if self._loaded is not None and self._loaded_key == key:
            return self._loaded, True
        self._release()
        if device == "cuda":
            devices.reset_peak_memory()
        loaded = load_model(config.model, config.pytorch, device, len(self._gpu_uuids))
        self._loaded, self._loaded_key = loaded, key
        self.model_load_count += 1
        self._load_peak_memory_mib = devices.peak_memory_mib() if device == "cuda" else None
        return loaded, False

    def _release(self) -> None:
        if self._loaded is None:
            return
        device = self._loaded.device
        self._loaded = None
        self._loaded_key = None
        self._load_peak_memory_mib = None
        devices.free_device_memory(device)

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        """Load (or reuse) the model, warm up, then generate every batch inside ``window``,
        in passes until ``min_window_s`` and ``config.min_iterations`` are both met. With a
        ``prefill_window``, then the same passes generating one token each (prefill only).

        Raises ``Cancelled`` when ``cancel`` is set (``window.end`` is then not called),
        ``BackendError`` on a failed load, bad prompts or running out of GPU memory.
        """
        if not self._initialised:
            raise BackendError("initialise() must run before run()")
        import torch

        device = choose_device(config, len(self._gpu_uuids))
        on_phase("loading", config.model.name or config.model.path or config.model.source)
        try:
            loaded, reused = self._ensure_model(config, device)
            prompt_set = build_prompt_set(config, loaded.tokenizer, loaded.vocab_size)
            if config.workload.mode == "server":
                stats = self._serve(
                    config, loaded, reused, prompt_set, window, cancel, on_phase, min_window_s
                )
            else:
                batches, generation = prepare_batches(config, loaded, prompt_set)
                stats = self._measure(
                    config, loaded, reused, batches, generation,
                    (window, prefill_window), cancel, on_phase, min_window_s,
                )  # fmt: skip
            return dataclasses.replace(
                stats,
                prompt_set_hash=prompt_set.prompt_set_hash,
                prompt_source=prompt_set.source_description,
            )
        except torch.cuda.OutOfMemoryError as error:
            self._release()
            raise BackendError(f"out of GPU memory: {error}") from error

    def _measure(
        self,
        config: ExperimentConfig,
        loaded: LoadedModel,
        reused: bool,
        batches: list[PreparedBatch],
        generation: GenerationConfig,
        windows: tuple[MeasurementWindow, MeasurementWindow | None],
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float,
    ) -> GenerationStats:
        import torch

        window, prefill_window = windows
        until = config.warmup.until_cv
        on_phase(
            "warmup",
            f"{config.warmup_batches} batch(es)" if until is None else f"until CV <= {until:g}",
        )
        if loaded.device == "cuda":
            devices.reset_peak_memory()
        if not config.greedy:
            torch.manual_seed(config.model.seed)
        timing = timing_enabled(config.workload)
        clock = self.token_clock if timing else None
        with torch.inference_mode():

            def warmup_batch(i: int) -> None:  # timed as the measured calls are
                if cancel.is_set():
                    raise Cancelled("cancelled during warmup")
                batch = batches[i % len(batches)]
                if clock is not None:
                    timed_generate(loaded.model, batch, generation, clock)
                else:
                    generate_batch(loaded.model, batch, generation)
                devices.synchronize(loaded.device)

            warmed = warm_up(warmup_batch, config.warmup_batches, config.warmup)
            if cancel.is_set():
                raise Cancelled("cancelled before the measured window")
            on_phase(
                "measuring",
                f"{len(batches)} batch(es) a pass, passes until {min_window_s:g} s and "
                f"{config.min_iterations} pass(es)",
            )
            measured = timed_passes(
                loaded.model, batches, generation, window, cancel,
                min_window_s, config.min_iterations, loaded.device, clock,
            )  # fmt: skip
            prefill_duration_s, prefill_passes = None, 0
            if prefill_window is not None:
                on_phase("measuring", "prefill only: one new token per prompt")
                prefill = copy.deepcopy(generation)
                prefill.max_new_tokens = 1
                prefilled = timed_passes(
                    loaded.model, batches, prefill, prefill_window, cancel,
                    min_window_s, config.min_iterations, loaded.device,
                )  # fmt: skip
                prefill_duration_s, prefill_passes = prefilled.duration_s, prefilled.passes
        passes = measured.passes
        counts = [
            new_tokens_per_row(out, batch.input_width_tokens, loaded.eos_token_ids,
                               config.ignore_eos, batch.output_tokens_per_row)
            for out, batch in zip(measured.outputs, batches * passes, strict=True)
        ]  # fmt: skip
        output_tokens = sum(sum(rows) for rows in counts)
        try:
            requests = (
                timed_requests(measured.calls, measured.outputs, counts, batches)
                if measured.calls
                else []
            )
        except ValueError as error:
            raise BackendError(str(error)) from error
        return GenerationStats(
            duration_s=measured.duration_s,
            repetitions=passes,
            batches=len(batches) * passes,
            num_prompts=sum(batch.rows for batch in batches) * passes,
            input_tokens=sum(batch.real_input_tokens for batch in batches) * passes,
            output_tokens=output_tokens,
            **self._run_facts(loaded, reused, warmed),
            prefill_duration_s=prefill_duration_s,
            prefill_repetitions=prefill_passes,
            timed_requests=requests,
            window_started_s=measured.started_s,
            latency_unavailable_reason=None if timing else TIMING_OFF_REASON,
        )

    def _serve(
        self,
        config: ExperimentConfig,
        loaded: LoadedModel,
        reused: bool,
        prompt_set: PromptSet,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float,
    ) -> GenerationStats:
        """Server mode: transformers' continuous batching fed by the arrival process
        (``serving``). ``batches`` counts the engine's steps in the window; ``repetitions``
        the passes over the prompt set that requests were taken from."""
        import torch

        from lem.workers.engines.pytorch.serving import serve

        workload = config.workload
        on_phase("warmup", f"{config.warmup_batches} batch(es) of {config.batch_size} requests")
        if loaded.device == "cuda":
            devices.reset_peak_memory()
        if not config.greedy:
            torch.manual_seed(config.model.seed)
        # no_grad, not inference_mode: transformers 5.17's generation thread runs under
        # no_grad and updates in place cache tensors that would be inference tensors here
        with torch.no_grad():
            on_measuring = lambda: on_phase(  # noqa: E731
                "measuring", f"server: {workload.arrival} arrivals, at least "
                f"{workload.num_requests or config.num_prompts} requests and {min_window_s:g} s",
            )  # fmt: skip
            served = serve(config, loaded, prompt_set, window, cancel, min_window_s, on_measuring)
        prompts = len(prompt_set.prompt_ids)
        return GenerationStats(
            duration_s=served.duration_s,
            repetitions=-(-len(served.requests) // prompts),
            batches=served.engine_steps,
            num_prompts=len(served.requests),
            input_tokens=served.input_tokens,
            output_tokens=served.output_tokens,
            **self._run_facts(loaded, reused, served.warmup),
            timed_requests=served.requests,
            window_started_s=served.started_s,
        )

    def _run_facts(
        self, loaded: LoadedModel, reused: bool, warmed: WarmupOutcome
    ) -> dict[str, Any]:
        """GenerationStats fields that offline and server runs fill alike: warmup, memory
        (MiB), load time (s) and reuse, device."""
        on_cuda = loaded.device == "cuda"
        return {
            "warmup_batches": warmed.batches,
            "warmup_s": warmed.duration_s,
            "warmup_converged": warmed.converged,
            "warmup_final_cv": warmed.final_cv,
            "peak_gpu_memory_load_mib": self._load_peak_memory_mib,
            "peak_gpu_memory_inference_mib": devices.peak_memory_mib() if on_cuda else None,
            "gpu_memory_unavailable_reason": None if on_cuda else devices.CPU_MEMORY_REASON,
            "model_load_s": 0.0 if reused else loaded.load_duration_s,
            "model_reused": reused,
            "model_load_count": self.model_load_count,
            "device": loaded.device,
        }

    def close(self) -> None:
        """Release the model and cached device memory."""
        self._release()
