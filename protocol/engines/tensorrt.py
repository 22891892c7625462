"""The TensorRT-LLM engine (experimental: its worker has never run on a GPU): its
``tensorrt:`` section, the problems of running it on TensorRT-LLM, and its ``SPEC``
(``lem.protocol.engines.spec``).

CUDA-free and TensorRT-LLM-free: the coordinator checks these before any worker starts,
and the worker's translation layer (``lem.workers.engines.tensorrt.translate``) checks them again
before it builds TensorRT-LLM's ``LLM`` arguments. Only ``backend: tensorrt`` reads it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

from lem.protocol.engines.spec import (
    EngineEnvironment,
    EngineSpec,
    Experiment,
    ModeSupport,
    Problem,
)

NAME = "tensorrt"

# lem's names for TensorRT-LLM's quantisation algorithms (``QuantAlgo`` member names).
# Weight-only ones need no calibration; the others calibrate on a dataset (see below).
QUANT_ALGOS: dict[str, str | None] = {
    "none": None,
    "fp8": "FP8",
    "int8_weight_only": "W8A16",
    "int4_weight_only": "W4A16",
    "int4_awq": "W4A16_AWQ",
    "w4a8_awq": "W4A8_AWQ",
}
CALIBRATED = ("fp8", "int4_awq", "w4a8_awq")
KV_CACHE_QUANT_ALGOS: dict[str, str | None] = {"none": None, "fp8": "FP8", "int8": "INT8"}

Quantization = Literal["none", "fp8", "int8_weight_only", "int4_weight_only", "int4_awq",
                       "w4a8_awq"]  # fmt: skip
KvCacheQuantization = Literal["none", "fp8", "int8"]
EngineBuild = Literal["if_missing", "never", "always"]


class TensorRtConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings only the TensorRT-LLM backend reads (experimental, never run on a GPU).

    Engine (each changes the built engine, so its cache key):
    ``tp_size`` × ``pp_size`` must equal ``gpu_count`` (``tp_size`` unset: ``gpu_count /
    pp_size``). ``quantization``: one of ``QUANT_ALGOS`` (weights and activations);
    ``kv_cache_quantization``: ``none``, ``fp8`` or ``int8``. ``fp8``, ``int4_awq`` and
    ``w4a8_awq`` calibrate on ``calibration_dataset`` (a local dataset folder; unset:
    TensorRT-LLM's default, cnn_dailymail, which must then be in the local Hugging Face
    cache: workers run with ``HF_HUB_OFFLINE=1``).
    ``max_batch_size`` (unset: ``batch_size``): the most requests in flight at once.
    ``max_num_tokens`` (unset: TensorRT-LLM's default): the most tokens one engine step
    takes, in tokens. The engine's longest prompt is ``input_tokens`` and longest
    sequence ``input_tokens + output_tokens``.

    Runtime: ``free_gpu_memory_fraction``: the fraction (0, 1] of free GPU memory the KV
    cache takes. ``engine_cache_dir`` (unset: ``$LEM_TRTLLM_ENGINE_CACHE``, else
    ``~/.cache/lem/trtllm-engines``): where built engines are kept. ``build_engine``:
    ``if_missing`` builds an engine the cache lacks; ``never`` fails instead (no build
    inside a campaign); ``always`` rebuilds and replaces the cached one.

    The dtype is ``model.dtype``. Random-weight models (``builtin``/``random``) are written
    once as a Hugging Face checkpoint of the named shape (seeded by ``model.seed``) in the
    engine cache, and the engine is built from it.
    """

    tp_size: int | None = None
    pp_size: int = 1
    quantization: Quantization = "none"
    kv_cache_quantization: KvCacheQuantization = "none"
    calibration_dataset: str | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    free_gpu_memory_fraction: float = 0.9
    engine_cache_dir: str | None = None
    build_engine: EngineBuild = "if_missing"


class TensorRtExperiment(Experiment, Protocol):
    """An experiment with its ``tensorrt`` section (an ``ExperimentConfig``)."""

    @property
    def tensorrt(self) -> TensorRtConfig: ...


def parallel_sizes(config: TensorRtExperiment) -> tuple[int, int]:
    """(tensor, pipeline) parallel sizes of ``config``, with the tensor default filled in."""
    return _parallel_sizes(config, config.tensorrt)


def _parallel_sizes(config: Experiment, section: TensorRtConfig) -> tuple[int, int]:
    if section.tp_size is not None:
        return section.tp_size, section.pp_size
    return max(1, config.gpu_count // max(1, section.pp_size)), section.pp_size


def tensorrt_problems(config: TensorRtExperiment) -> list[Problem]:
    """Problems of running ``config`` on TensorRT-LLM, as (dotted field path, problem);
    none for other backends."""
    return section_problems(config, config.tensorrt)


def section_problems(config: Experiment, section: TensorRtConfig) -> list[Problem]:
    """``tensorrt_problems`` given the section (the registry's hook)."""
    if config.backend != NAME:
        return []
    problems: list[Problem] = []
    if config.device == "cpu":
        problems.append(("device", "the tensorrt backend runs on CUDA GPUs only, got 'cpu'"))
    if config.model.source == "gguf":
        problems.append(("model.source", "'gguf' is not supported by the tensorrt backend"))
    for name in ("tp_size", "pp_size", "max_batch_size", "max_num_tokens"):
        value = getattr(section, name)
        if value is not None and value < 1:
            problems.append((f"tensorrt.{name}", f"must be >= 1, got {value}"))
    if not 0 < section.free_gpu_memory_fraction <= 1:
        problems.append(
            ("tensorrt.free_gpu_memory_fraction",
             f"must be in (0, 1], got {section.free_gpu_memory_fraction}")
        )  # fmt: skip
    if section.max_num_tokens is not None and section.max_num_tokens < config.input_tokens:
        problems.append(
            ("tensorrt.max_num_tokens",
             f"must be >= input_tokens ({config.input_tokens}), got {section.max_num_tokens}")
        )  # fmt: skip
    if section.calibration_dataset is not None and section.quantization not in CALIBRATED:
        problems.append(
            ("tensorrt.calibration_dataset",
             f"is not used by quantization '{section.quantization}' (only by "
             f"{', '.join(CALIBRATED)})")
        )  # fmt: skip
    if problems:
        return problems
    tensor, pipeline = _parallel_sizes(config, section)
    if tensor * pipeline != config.gpu_count:
        field = "tp_size" if section.tp_size is not None else "pp_size"
        problems.append(
            (f"tensorrt.{field}",
             f"tp_size ({tensor}) x pp_size ({pipeline}) must equal gpu_count "
             f"({config.gpu_count})")
        )  # fmt: skip
    return problems


def hashed(config: Experiment, section: dict[str, Any]) -> dict[str, Any] | None:
    """Hashed for experiments of this engine only; where engines are kept changes no
    measurement."""
    if config.backend != NAME:
        return None
    section.pop("engine_cache_dir", None)
    return section


SPEC = EngineSpec(
    name=NAME,
    section=TensorRtConfig,
    entry_point="lem.workers.engines.tensorrt.engine:TensorRtBackend",
    environment=EngineEnvironment(
        locks=("tensorrt",),
        distributions=("tensorrt_llm",),
        probe_imports=("tensorrt_llm", "torch", "transformers"),
        engine_distribution="tensorrt_llm",
        worker_distribution="tensorrt_llm",
        missing_hint=(
            "TensorRT-LLM has wheels only for some Linux/CUDA/Python combinations "
            "(pypi.nvidia.com), none may fit this platform/Python; experimental"
        ),
        experimental_note=(
            "its worker has never run on a GPU (written against the TensorRT-LLM 1.0 LLM API; "
            "only its config translation and engine cache are tested)"
        ),
    ),
    modes={
        "offline": ModeSupport(
            "the whole prompt set through TensorRT-LLM's LLM.generate_async (streamed), at "
            "most max_batch_size at once (experimental: never run on a GPU)"
        ),
        "server": ModeSupport(
            "TensorRT-LLM's LLM.generate_async fed by lem's arrival process",
            unsupported_reason="not implemented (the TensorRT-LLM worker runs offline only)",
        ),
    },
    experimental=True,
    problems=section_problems,
    hashed=hashed,
)
