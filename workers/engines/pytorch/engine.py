"""``PyTorchBackend``: the transformers ``model.generate`` engine of lem workers.

Importing this module imports neither torch nor transformers; ``initialise`` does.
One loaded model is kept, keyed by ``load_key(config)``, and reused by later runs with the
same key. Everything avoidable (prompt tensors on the device, the GenerationConfig) is
built before the measured window; inside it only ``model.generate`` runs (offline,
``offline.py``) or transformers' continuous batching serves requests (``serving.py``).
Warmup, the window and the passes are the scenario layer's
(``lem.workers.workload.scenarios``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lem.protocol.config import ExperimentConfig, load_key
from lem.workers.engines.base import (
    BackendError,
    DeviceReport,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
)
from lem.workers.engines.pytorch import device as devices
from lem.workers.engines.pytorch.generation import build_generation_config
from lem.workers.engines.pytorch.loader import LoadedModel, load_model
from lem.workers.engines.pytorch.offline import PyTorchOffline, offline_work
from lem.workers.engines.pytorch.prompts import PreparedBatch, build_prompt_set, make_batches
from lem.workers.workload.scenarios import ScenarioBackend

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from lem.workers.engines.pytorch.serving import CbEngine
    from lem.workers.engines.pytorch.token_clock import ClockName
    from lem.workers.workload.prompt_set import PromptSet


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


class PyTorchBackend(ScenarioBackend):
    """The Engine interface over transformers. One instance per worker process.

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

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        """The model of ``config``: the kept one when its load key matches, else a new load.

        Raises ``BackendError`` on a failed load, a device the worker lacks or running out
        of GPU memory."""
        if not self._initialised:
            raise BackendError("initialise() must run before run()")
        device = choose_device(config, len(self._gpu_uuids))
        with self._out_of_memory():
            loaded, reused = self._ensure_model(config, device)
        load_s = 0.0 if reused else loaded.load_duration_s
        return LoadInfo(
            load_s, reused, self.model_load_count, loaded.device, dtype=loaded.dtype_name
        )

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[PyTorchOffline]:
        """The prepared batches of ``config`` under ``torch.inference_mode()``, the peak
        memory counter reset and, when sampling, the seed set."""
        import torch

        loaded = self._model()
        with self._out_of_memory():
            prompt_set = build_prompt_set(config, loaded.tokenizer, loaded.vocab_size)
            batches, generation = prepare_batches(config, loaded, prompt_set)
            self._before_warmup(config, loaded)
            with torch.inference_mode():
                yield offline_work(
                    config, loaded, prompt_set, batches, generation, self.token_clock
                )

    @contextmanager
    def serve(self, config: ExperimentConfig) -> Iterator[CbEngine]:
        """Transformers' continuous batching on the kept model (``serving``), started and,
        on leaving, stopped and destroyed."""
        import torch

        from lem.workers.engines.pytorch.serving import open_session

        loaded = self._model()
        with self._out_of_memory():
            prompt_set = build_prompt_set(config, loaded.tokenizer, loaded.vocab_size)
            self._before_warmup(config, loaded)
            # no_grad, not inference_mode: transformers 5.17's generation thread runs under
            # no_grad and updates in place cache tensors that would be inference tensors here
            with torch.no_grad(), open_session(config, loaded, prompt_set) as session:
                yield session

    def memory(self) -> GpuMemory:
        """Peak GPU memory of the load and of warmup + window (MiB); none on CPU."""
        on_cuda = self._loaded is not None and self._loaded.device == "cuda"
        return GpuMemory(
            self._load_peak_memory_mib,
            devices.peak_memory_mib() if on_cuda else None,
            None if on_cuda else devices.CPU_MEMORY_REASON,
        )

    def _model(self) -> LoadedModel:
        if self._loaded is None:
            raise BackendError("load() must run before offline() or serve()")
        return self._loaded

    def _before_warmup(self, config: ExperimentConfig, loaded: LoadedModel) -> None:
        import torch

        if loaded.device == "cuda":
            devices.reset_peak_memory()
        if not config.greedy:
            torch.manual_seed(config.model.seed)

    @contextmanager
    def _out_of_memory(self) -> Iterator[None]:
        """Running out of GPU memory releases the model and is a ``BackendError``."""
        import torch

        try:
            yield
        except torch.cuda.OutOfMemoryError as error:
            self._release()
            raise BackendError(f"out of GPU memory: {error}") from error

    def close(self) -> None:
        """Release the model and cached device memory."""
        self._release()
