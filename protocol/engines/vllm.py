"""The vLLM engine: its ``vllm:`` section, the problems of running it on vLLM, and its
``SPEC`` (``lem.protocol.engines.spec``).

CUDA-free and vLLM-free: the coordinator checks these before any worker starts, and the
vLLM worker's translation layer (``lem.workers.engines.vllm.translate``) checks them again before
it builds vLLM's ``EngineArgs``. Only experiments with ``backend: vllm`` read the section.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from lem.protocol.engines.spec import (
    EngineEnvironment,
    EngineSpec,
    Experiment,
    ModeSupport,
    Problem,
)

NAME = "vllm"


class VllmConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings only the vLLM backend reads (each is one of vLLM's ``EngineArgs``).

    ``tensor_parallel_size`` × ``pipeline_parallel_size`` must equal ``gpu_count`` on GPUs
    (every measured GPU does the work); ``tensor_parallel_size`` unset means
    ``gpu_count / pipeline_parallel_size``. ``gpu_memory_utilization``: the fraction
    (0, 1] of each GPU's memory vLLM may take. ``max_num_seqs`` (unset: ``batch_size``):
    the most sequences vLLM schedules at once. ``max_model_len`` (unset: ``input_tokens +
    output_tokens``), in tokens. ``enforce_eager``: no CUDA graphs. ``quantization``: a
    vLLM quantization method name (vLLM checks it). ``seed`` (unset: ``model.seed``).
    The dtype is ``model.dtype``; random-weight models load with vLLM's ``dummy`` format.
    """

    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    quantization: str | None = None
    seed: int | None = None


class VllmExperiment(Experiment, Protocol):
    """An experiment with its ``vllm`` section (an ``ExperimentConfig``)."""

    @property
    def vllm(self) -> VllmConfig: ...


def parallel_sizes(config: VllmExperiment) -> tuple[int, int]:
    """(tensor, pipeline) parallel sizes of ``config``, with the tensor default filled in."""
    return _parallel_sizes(config, config.vllm)


def _parallel_sizes(config: Experiment, vllm: VllmConfig) -> tuple[int, int]:
    pipeline = vllm.pipeline_parallel_size
    if vllm.tensor_parallel_size is not None:
        return vllm.tensor_parallel_size, pipeline
    return max(1, config.gpu_count // max(1, pipeline)), pipeline


def vllm_problems(config: VllmExperiment) -> list[Problem]:
    """Problems of running ``config`` on vLLM, as (dotted field path, problem); none for
    other backends."""
    return section_problems(config, config.vllm)


def section_problems(config: Experiment, vllm: VllmConfig) -> list[Problem]:
    """``vllm_problems`` given the section (the registry's hook)."""
    if config.backend != NAME:
        return []
    problems: list[Problem] = []
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs"):
        value = getattr(vllm, name)
        if value is not None and value < 1:
            problems.append((f"vllm.{name}", f"must be >= 1, got {value}"))
    if not 0 < vllm.gpu_memory_utilization <= 1:
        problems.append(
            ("vllm.gpu_memory_utilization", f"must be in (0, 1], got {vllm.gpu_memory_utilization}")
        )
    needed_tokens = config.input_tokens + config.output_tokens
    if vllm.max_model_len is not None and vllm.max_model_len < needed_tokens:
        problems.append(
            ("vllm.max_model_len",
             f"must be >= input_tokens + output_tokens ({needed_tokens}), got {vllm.max_model_len}")
        )  # fmt: skip
    if config.model.source == "gguf":
        problems.append(("model.source", "'gguf' is not supported by the vllm backend yet"))
    if problems:
        return problems
    tensor, pipeline = _parallel_sizes(config, vllm)
    if config.device == "cpu":
        if pipeline > 1:
            problems.append(
                ("vllm.pipeline_parallel_size", f"must be 1 with device 'cpu', got {pipeline}")
            )
    elif tensor * pipeline != config.gpu_count:
        field = (
            "tensor_parallel_size"
            if vllm.tensor_parallel_size is not None
            else "pipeline_parallel_size"
        )
        problems.append(
            (f"vllm.{field}",
             f"tensor_parallel_size ({tensor}) x pipeline_parallel_size ({pipeline}) must equal "
             f"gpu_count ({config.gpu_count})")
        )  # fmt: skip
    return problems


SPEC = EngineSpec(
    name=NAME,
    section=VllmConfig,
    entry_point="lem.workers.engines.vllm.engine:VllmBackend",
    environment=EngineEnvironment(
        locks=("vllm",),
        distributions=("vllm",),
        probe_imports=("vllm", "torch", "transformers"),
        engine_distribution="vllm",
        worker_distribution="vllm",
        missing_hint="install it with `lem env sync vllm` (a Linux CUDA wheel from PyPI)",
    ),
    modes={
        "offline": ModeSupport(
            "the whole prompt set through vLLM's LLM.generate, at most max_num_seqs at once "
            "(not yet run on a GPU)"
        ),
        "server": ModeSupport(
            "vLLM's AsyncLLM engine fed by lem's arrival process, streaming each request's "
            "new tokens (not yet run on a GPU)"
        ),
    },
    problems=section_problems,
)
