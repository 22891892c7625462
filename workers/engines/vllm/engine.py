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
sequences together (``steps.py``). Warmup sends ``batch_size`` prompts at a time. Warmup,
the window and the passes are the scenario layer's (``lem.workers.workload.scenarios``).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lem.protocol.config import ExperimentConfig, load_key
from lem.workers.engines.base import (
    BackendError,
    DeviceReport,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
)
from lem.workers.engines.vllm.steps import VllmOffline
from lem.workers.engines.vllm.translate import (
    check_supported,
    engine_args,
    to_async_engine_args,
    to_sampling_params,
)
from lem.workers.workload.scenarios import ScenarioBackend

if TYPE_CHECKING:
    from lem.workers.engines.vllm.serving import AsyncLlmServer
    from lem.workers.workload.prompt_set import PromptSet

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


class VllmBackend(ScenarioBackend):
    """The Engine interface over vLLM's engines. One instance per worker process."""

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

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        """Refuse what vLLM cannot run here, then start the engine of ``config`` or reuse
        the kept one (same load key and mode)."""
        if not self._initialised:
            raise BackendError("initialise() must run before run()")
        check_supported(config)
        if config.device == "cuda" and not self._gpu_uuids:
            raise BackendError("device 'cuda' was asked for but this worker has no GPU")
        _, reused = self._ensure_engine(config)
        load_s = 0.0 if reused else self._load_s
        device = "cuda" if self._gpu_uuids and config.device != "cpu" else "cpu"
        return LoadInfo(load_s, reused, self.model_load_count, device)

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[VllmOffline]:
        """The prompt set and sampling parameters on the kept ``LLM``'s step loop; on a
        clean exit, vLLM's metrics of the measured requests are kept."""
        from vllm.inputs import TokensPrompt

        engine = self._llm.llm_engine
        prompt_set = self._prompt_set(config, engine.model_config)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_set.prompt_ids]
        targets = prompt_set.output_tokens_per_prompt
        params = [to_sampling_params(config, target) for target in targets]
        ones = [to_sampling_params(config, t, prefill_only=True) for t in targets]
        work = VllmOffline(engine, prompt_set, prompts, params, ones, config.batch_size)
        yield work
        self.last_vllm_metrics = work.measured_metrics()

    @contextmanager
    def serve(self, config: ExperimentConfig) -> Iterator[AsyncLlmServer]:
        """The kept ``AsyncLLM`` as a server session (``serving``); on a clean exit,
        vLLM's metrics of the measured requests are kept."""
        from vllm.inputs import TokensPrompt

        from lem.workers.engines.vllm.serving import AsyncLlmServer

        started = self._llm
        prompt_set = self._prompt_set(config, started.engine.model_config)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_set.prompt_ids]
        params = [to_sampling_params(config, target, stream_deltas=True)
                  for target in prompt_set.output_tokens_per_prompt]  # fmt: skip
        with AsyncLlmServer(started, prompt_set, prompts, params) as server:
            yield server
        self.last_vllm_metrics = server.measured_metrics()

    def memory(self) -> GpuMemory:
        return GpuMemory(None, None, MEMORY_REASON)

    def _prompt_set(self, config: ExperimentConfig, model_config: Any) -> PromptSet:
        from lem.workers.engines.pytorch.prompts import build_prompt_set
        from lem.workers.engines.pytorch.tokenizer import load_tokenizer

        vocab_size = int(model_config.get_vocab_size())
        return build_prompt_set(config, load_tokenizer(config.model), vocab_size)

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
