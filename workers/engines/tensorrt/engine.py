"""``TensorRtBackend``: the TensorRT-LLM backend of lem workers, offline mode.

Experimental: it has never run on a GPU. Written against TensorRT-LLM 1.0's documented
LLM API (TensorRT engine flow: ``tensorrt_llm._tensorrt_engine.LLM``, or
``tensorrt_llm.LLM`` in 0.x releases; ``LLM.save``; ``LLM.generate_async`` with
streaming; ``LLM.shutdown``). tensorrt_llm has no wheel for lem's development machine, so
only what runs without it is tested: the translation, the engine cache and this class
driven by a stand-in engine.

Importing this module imports neither TensorRT-LLM nor torch; ``initialise`` does (a
worker without TensorRT-LLM refuses with one line). Engines are built once per
``engine_inputs`` and kept in the engine cache (``engine_cache``); a build's live engine
is used as it is, a cached one is loaded from its folder. One engine is kept per worker,
keyed by ``load_key(config)``. Prompts go to TensorRT-LLM as token ids (lem's prompt set,
as the PyTorch backend builds it); each pass sends the whole prompt set at once and the
engine runs at most ``max_batch_size`` requests together. Warmup sends ``batch_size``
prompts at a time (``streaming.py``). ``GenerationStats.batches`` counts passes
(TensorRT-LLM schedules its in-flight batches itself and the offline API does not report
its engine steps). Warmup, the window and the passes are the scenario layer's
(``lem.workers.workload.scenarios``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lem.protocol.config import ExperimentConfig, load_key
from lem.workers.engines.base import (
    BackendError,
    DeviceReport,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
    ServerSession,
)
from lem.workers.engines.tensorrt.checkpoint import write_random_checkpoint
from lem.workers.engines.tensorrt.engine_cache import cache_root, engine_inputs, ensure_engine
from lem.workers.engines.tensorrt.streaming import TrtOffline
from lem.workers.engines.tensorrt.translate import (
    build_arguments,
    check_supported,
    hf_model_dir,
    load_arguments,
    materialise,
    random_weights,
    sampling_params,
)
from lem.workers.workload.scenarios import ScenarioBackend

log = logging.getLogger("lem.worker.tensorrt")
PACKAGES = ("tensorrt_llm", "tensorrt", "torch", "transformers", "numpy")
MEMORY_REASON = (
    "TensorRT-LLM's executor holds the GPU memory (its KV cache takes "
    "free_gpu_memory_fraction of what is free): lem does not read its peak"
)
Result = TypeVar("Result")


@dataclass(frozen=True)
class TrtApi:
    """The parts of TensorRT-LLM the backend uses: the ``LLM`` class of the TensorRT
    engine flow, the namespace holding ``SamplingParams`` and the config classes
    (``tensorrt_llm.llmapi``), and the package version."""

    llm_class: Any
    namespace: Any
    version: str


def import_tensorrt_llm() -> TrtApi:
    """TensorRT-LLM's API, or a one-line ``BackendError`` when it cannot be imported."""
    try:
        import tensorrt_llm
        from tensorrt_llm import llmapi
    except Exception as error:  # ImportError, or a broken install (CUDA, MPI, torch)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BackendError(
            f"the tensorrt backend needs the tensorrt_llm package in this worker's Python: "
            f"{first} (experimental: point LEM_TENSORRT_PYTHON at a TensorRT-LLM "
            "environment, or lem env sync tensorrt where a wheel exists)"
        ) from None
    try:  # 1.x: tensorrt_llm.LLM is the PyTorch flow; the engine flow moved here
        from tensorrt_llm._tensorrt_engine import LLM
    except ImportError:  # 0.x: tensorrt_llm.LLM builds TensorRT engines
        LLM = tensorrt_llm.LLM
    return TrtApi(LLM, llmapi, str(tensorrt_llm.__version__))


class TensorRtBackend(ScenarioBackend):
    """The Engine interface over TensorRT-LLM's LLM API. One instance per worker process.

    ``api``: TensorRT-LLM's (imported by ``initialise`` when None; tests pass a stand-in).
    """

    name = "tensorrt"

    def __init__(self, api: TrtApi | None = None) -> None:
        self._api = api
        self._gpu_uuids: list[str] = []
        self._gpu_names: list[str] = []
        self._initialised = False
        self._llm: Any = None
        self._key: str | None = None
        self._load_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.model_load_count = 0
        self.last_engine_key: str | None = None
        self.last_engine_hit: bool | None = None

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        """Import TensorRT-LLM and check CUDA sees exactly ``expected_gpu_uuids``."""
        from lem.workers.engines.pytorch import device as devices

        api = self._api or import_tensorrt_llm()
        import torch

        gpu_uuids = devices.check_cuda_visibility(expected_gpu_uuids) if expected_gpu_uuids else []
        names = []
        for index in range(len(gpu_uuids)):
            major, minor = torch.cuda.get_device_capability(index)
            names.append(f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})")
        self.use_devices(api, gpu_uuids, names)
        return DeviceReport(
            device="cuda" if gpu_uuids else "cpu",
            gpu_uuids=gpu_uuids,
            cuda_version=torch.version.cuda,
            backend_version=api.version,
            packages=_versions(PACKAGES),
        )

    def use_devices(self, api: TrtApi, gpu_uuids: list[str], gpu_names: list[str]) -> None:
        """Take ``api`` and the checked GPUs (UUIDs, and models with compute capability,
        which key the engine cache); ``initialise`` ends here."""
        self._api = api
        self._gpu_uuids = list(gpu_uuids)
        self._gpu_names = list(gpu_names)
        self._initialised = True

    def _run(self, coroutine: Coroutine[Any, Any, Result]) -> Result:
        """Run ``coroutine`` on the backend's event loop (made on first use)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)

    def _start(self, arguments: dict[str, Any]) -> Any:
        """A TensorRT-LLM ``LLM`` from translated ``arguments``."""
        assert self._api is not None
        kwargs = materialise(arguments, self._api.namespace)
        try:
            return self._api.llm_class(**kwargs)
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BackendError(f"TensorRT-LLM could not start the engine: {first}") from error

    def _checkpoint(self, config: ExperimentConfig, root: Path) -> Path:
        if random_weights(config):
            return write_random_checkpoint(config, root)
        folder = hf_model_dir(config)
        if not folder.is_dir():
            raise BackendError(f"model.path: no model folder at {folder}")
        return folder

    def _ensure_engine(self, config: ExperimentConfig, on_phase: PhaseCallback) -> tuple[Any, bool]:
        """The engine of ``config``: the kept one when its load key matches, else one from
        the engine cache (built there first when missing and allowed)."""
        key = load_key(config)
        if self._llm is not None and self._key == key:
            return self._llm, True
        self._release()
        assert self._api is not None
        started_s = time.perf_counter()
        root = cache_root(config)
        checkpoint = self._checkpoint(config, root)
        inputs = engine_inputs(config, self._api.version, self._gpu_names)

        def build(staging: Path) -> Any:
            on_phase("loading", f"building a TensorRT engine into {staging.parent}")
            llm = self._start(build_arguments(config, checkpoint))
            try:
                llm.save(str(staging))
            except BaseException:
                llm.shutdown()
                raise
            return llm

        entry, built = ensure_engine(root, inputs, config.tensorrt.build_engine, build)
        if built is None:  # a cache hit: load the saved engine
            built = self._start(load_arguments(config, entry.engine_dir))
        self._llm = built
        how = "found in the cache" if entry.hit else f"built in {entry.build_s:.1f} s"
        log.info("TensorRT engine %s %s (%s)", entry.key, how, entry.folder)
        self._load_s = time.perf_counter() - started_s
        self._key = key
        self.last_engine_key, self.last_engine_hit = entry.key, entry.hit
        self.model_load_count += 1
        return self._llm, False

    def _release(self) -> None:
        if self._llm is None:
            return
        llm, self._llm, self._key = self._llm, None, None
        shutdown = getattr(llm, "shutdown", None)
        if shutdown is not None:
            shutdown()
        gc.collect()

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        """Refuse what this backend cannot run, then the engine of ``config``: the kept
        one, one from the engine cache, or one built into it."""
        if not self._initialised or self._api is None:
            raise BackendError("initialise() must run before run()")
        check_supported(config)
        if not self._gpu_uuids:
            raise BackendError("device: the tensorrt backend needs a GPU, and this worker has none")
        _, reused = self._ensure_engine(config, on_phase)
        return LoadInfo(0.0 if reused else self._load_s, reused, self.model_load_count, "cuda")

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[TrtOffline]:
        """The prompt set and sampling parameters on the kept engine."""
        from lem.workers.engines.pytorch.prompts import build_prompt_set
        from lem.workers.engines.pytorch.tokenizer import load_tokenizer

        assert self._api is not None
        vocab_size = _vocab_size(config)
        prompt_set = build_prompt_set(config, load_tokenizer(config.model), vocab_size)
        targets = prompt_set.output_tokens_per_prompt
        make = self._api.namespace.SamplingParams
        params = [make(**sampling_params(config, target)) for target in targets]
        ones = [make(**sampling_params(config, t, prefill_only=True)) for t in targets]
        yield TrtOffline(self._run, self._llm, prompt_set, params, ones, config.batch_size)

    def serve(self, config: ExperimentConfig) -> AbstractContextManager[ServerSession]:
        raise BackendError("the tensorrt backend has no server mode (refused at config time)")

    def memory(self) -> GpuMemory:
        return GpuMemory(None, None, MEMORY_REASON)

    def close(self) -> None:
        """Shut the engine down and close the event loop."""
        self._release()
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def _vocab_size(config: ExperimentConfig) -> int:
    """The model's vocabulary size (token ids must stay below it)."""
    if random_weights(config):
        from lem.workers.engines.vllm.translate import shape_hf_config

        return int(shape_hf_config(config)["vocab_size"])
    path = hf_model_dir(config) / "config.json"
    try:
        found = json.loads(path.read_text())
        text = found.get("text_config") or {}
        return int(found.get("vocab_size") or text["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BackendError(f"model.path: cannot read vocab_size from {path}: {error}") from None


def _versions(names: tuple[str, ...]) -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
