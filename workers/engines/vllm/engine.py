"""``VllmBackend``: the vLLM backend of lem workers, offline and server modes. Not yet
run on a GPU.

Written against vLLM's documented ``LLM`` / ``LLMEngine`` / ``AsyncLLM`` API and checked
on CPU only
(registration, refusals, the translation to real ``EngineArgs`` / ``SamplingParams``):
vLLM needs a newer torch than the GPU machine lent to lem has, so no measurement has run
through this module yet.

Importing this module imports neither vLLM nor torch; ``initialise`` does (a worker
without vLLM refuses with one line). One engine is kept per worker, keyed by
``load_key(config)`` and the mode, and reused by later runs with the same key: offline
runs on ``vllm.LLM``, server mode on ``AsyncLLM`` (``serving.py``), so a change of mode
shuts the kept engine down and starts the other (one at a time). Prompts go to vLLM as
token ids (lem's prompt set, as the PyTorch backend builds it); each pass sends the
whole prompt set at once and vLLM runs at most ``max_num_seqs`` (default ``batch_size``)
sequences together. Warmup sends ``batch_size`` prompts at a time.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lem.protocol.config import ExperimentConfig, load_key
from lem.workers.engines.base import (
    BackendError,
    DeviceReport,
    GenerationStats,
    MeasurementWindow,
    PhaseCallback,
)
from lem.workers.engines.vllm.steps import (
    TimedVllmPasses,
    run_pass,
    timed_requests,
    timed_vllm_passes,
)
from lem.workers.engines.vllm.translate import (
    check_supported,
    engine_args,
    to_async_engine_args,
    to_sampling_params,
)
from lem.workers.workload.engine_passes import EngineFacts, offline_stats, warm_then_measure

PACKAGES = ("vllm", "torch", "transformers", "tokenizers", "numpy")
MEMORY_REASON = (
    "vLLM's engine process holds the GPU memory (a fixed gpu_memory_utilization share): "
    "lem does not read its peak"
)


def import_vllm() -> Any:
    """The ``vllm`` module, or a one-line ``BackendError`` when it cannot be imported."""
    try:
        import vllm
    except Exception as error:  # ImportError, or a broken install (e.g. torch mismatch)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BackendError(
            f"the vllm backend needs the vllm package in this worker's Python: {first} "
            "(point LEM_VLLM_PYTHON at the Python of a vLLM environment: lem env sync vllm, "
            "or make vllm-venv in a lem checkout)"
        ) from None
    return vllm


class VllmBackend:
    """The Backend protocol over vLLM's offline engine. One instance per worker process."""

    name = "vllm"

    def __init__(self) -> None:
        self._gpu_uuids: list[str] = []
        self._initialised = False
        self._llm: Any = None  # a vllm.LLM (offline) or a serving.AsyncEngine (server)
        self._key: tuple[str, str] | None = None
        self._load_s = 0.0
        self._scratch = tempfile.TemporaryDirectory(prefix="lem-vllm-")
        self.model_load_count = 0
        self.last_vllm_metrics: list[dict[str, Any] | None] = []  # vLLM's, last window

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        """Import vLLM and check CUDA sees exactly ``expected_gpu_uuids``."""
        from lem.workers.engines.pytorch import device as devices

        vllm = import_vllm()
        import torch

        gpu_uuids = devices.check_cuda_visibility(expected_gpu_uuids) if expected_gpu_uuids else []
        self._gpu_uuids = gpu_uuids
        self._initialised = True
        return DeviceReport(
            device="cuda" if gpu_uuids else "cpu",
            gpu_uuids=gpu_uuids,
            cuda_version=torch.version.cuda,
            backend_version=vllm.__version__,
            packages=_versions(PACKAGES),
        )

    def _ensure_engine(self, config: ExperimentConfig) -> tuple[Any, bool]:
        """The engine of ``config``: the kept one when its load key and mode match, else
        new (``vllm.LLM`` offline, a ``serving.AsyncEngine`` in server mode)."""
        key = (load_key(config), config.workload.mode)
        if self._llm is not None and self._key == key:
            return self._llm, True
        self._release()
        scratch = Path(self._scratch.name)
        started_s = time.perf_counter()
        try:
            if config.workload.mode == "server":
                from vllm.v1.engine.async_llm import AsyncLLM

                from lem.workers.engines.vllm.serving import AsyncEngine

                arguments = to_async_engine_args(config, scratch)
                self._llm = AsyncEngine(lambda: AsyncLLM.from_engine_args(arguments))
            else:
                from vllm import LLM

                self._llm = LLM(**engine_args(config, scratch), disable_log_stats=False)
        except BackendError:
            raise
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BackendError(f"vLLM could not start the engine: {first}") from error
        self._load_s = time.perf_counter() - started_s
        self._key = key
        self.model_load_count += 1
        return self._llm, False

    def _release(self) -> None:
        if self._llm is None:
            return
        engine, self._llm = self._llm, None
        server, self._key = self._key is not None and self._key[1] == "server", None
        try:
            if server:
                engine.shutdown()  # AsyncLLM's engine-core process, then lem's loop thread
        finally:
            del engine
            gc.collect()

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        """Load (or reuse) the engine, warm up, then run passes over the prompt set inside
        ``window`` until ``min_window_s`` and ``config.min_iterations`` are both met; with
        ``prefill_window``, the same passes with one output token each (prefill only)."""
        if not self._initialised:
            raise BackendError("initialise() must run before run()")
        check_supported(config)
        if config.device == "cuda" and not self._gpu_uuids:
            raise BackendError("device 'cuda' was asked for but this worker has no GPU")
        from vllm.inputs import TokensPrompt

        from lem.workers.engines.pytorch.prompts import build_prompt_set
        from lem.workers.engines.pytorch.tokenizer import load_tokenizer

        on_phase("loading", config.model.name or config.model.path or config.model.source)
        llm, reused = self._ensure_engine(config)
        if config.workload.mode == "server":
            return self._serve(config, llm, reused, window, cancel, on_phase, min_window_s)
        engine = llm.llm_engine
        vocab_size = int(engine.model_config.get_vocab_size())
        prompt_set = build_prompt_set(config, load_tokenizer(config.model), vocab_size)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_set.prompt_ids]
        targets = prompt_set.output_tokens_per_prompt
        params = [to_sampling_params(config, target) for target in targets]
        ones = [to_sampling_params(config, t, prefill_only=True) for t in targets]

        def warmup_batch(chosen: list[int], i: int) -> None:
            run_pass(engine, [prompts[j] for j in chosen], [params[j] for j in chosen],
                     cancel, f"warmup{i}")  # fmt: skip

        def measure(edges: MeasurementWindow, prefill_only: bool) -> TimedVllmPasses:
            return timed_vllm_passes(engine, prompts, ones if prefill_only else params, edges,
                                     cancel, min_window_s, config.min_iterations)  # fmt: skip

        run = warm_then_measure(config, len(prompts), warmup_batch, measure, window,
                                prefill_window, cancel, on_phase, min_window_s)  # fmt: skip
        passes = run.measured.passes
        self.last_vllm_metrics = [record.vllm_metrics for p in passes for record in p.records]
        facts = EngineFacts(
            batches=sum(done.engine_steps for done in passes),
            model_load_s=0.0 if reused else self._load_s,
            model_reused=reused,
            model_load_count=self.model_load_count,
            device="cuda" if self._gpu_uuids and config.device != "cpu" else "cpu",
            memory_unavailable_reason=MEMORY_REASON,
        )
        return offline_stats(run, prompt_set, facts, timed_requests(passes))

    def _serve(
        self,
        config: ExperimentConfig,
        started: Any,
        reused: bool,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float,
    ) -> GenerationStats:
        """Server mode: ``AsyncLLM`` fed by the arrival process (``serving``). AsyncLLM
        reports no engine steps to its client: ``batches`` counts the passes over the
        prompt set that requests were taken from, as ``repetitions`` does."""
        from vllm.inputs import TokensPrompt

        from lem.workers.engines.pytorch.prompts import build_prompt_set
        from lem.workers.engines.pytorch.tokenizer import load_tokenizer
        from lem.workers.engines.vllm.serving import AsyncLlmServer, serve

        vocab_size = int(started.engine.model_config.get_vocab_size())
        prompt_set = build_prompt_set(config, load_tokenizer(config.model), vocab_size)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_set.prompt_ids]
        params = [to_sampling_params(config, target, stream_deltas=True)
                  for target in prompt_set.output_tokens_per_prompt]  # fmt: skip
        workload = config.workload
        on_phase("warmup", f"{config.warmup_batches} batch(es) of {config.batch_size} requests")
        on_measuring = lambda: on_phase(  # noqa: E731
            "measuring", f"server: {workload.arrival} arrivals, at least "
            f"{workload.num_requests or config.num_prompts} requests and {min_window_s:g} s",
        )  # fmt: skip
        served = serve(config, AsyncLlmServer(started, prompts, params), window, cancel,
                       min_window_s, on_measuring)  # fmt: skip
        self.last_vllm_metrics = served.vllm_metrics
        passes = -(-len(served.requests) // len(prompts))
        return GenerationStats(
            duration_s=served.duration_s,
            repetitions=passes,
            batches=passes,
            num_prompts=len(served.requests),
            input_tokens=sum(r.input_tokens for r in served.requests),
            output_tokens=sum(len(r.token_times_s) for r in served.requests),
            warmup_batches=served.warmup.batches,
            warmup_s=served.warmup.duration_s,
            warmup_converged=served.warmup.converged,
            warmup_final_cv=served.warmup.final_cv,
            peak_gpu_memory_load_mib=None,
            peak_gpu_memory_inference_mib=None,
            gpu_memory_unavailable_reason=MEMORY_REASON,
            model_load_s=0.0 if reused else self._load_s,
            model_reused=reused,
            model_load_count=self.model_load_count,
            device="cuda" if self._gpu_uuids and config.device != "cpu" else "cpu",
            prompt_set_hash=prompt_set.prompt_set_hash,
            prompt_source=prompt_set.source_description,
            timed_requests=served.requests,
            window_started_s=served.started_s,
        )

    def close(self) -> None:
        """Release the engine and the random-weight model folders."""
        self._release()
        self._scratch.cleanup()


def _versions(names: tuple[str, ...]) -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
