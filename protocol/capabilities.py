"""Which workload modes each backend runs, checked by the coordinator before any worker
starts (CUDA-free: nothing here imports a backend library).

An unsupported (backend, mode) pair, or a supported mode with a setting the backend cannot
honour in it, is a config problem: ``lem`` exits 2 with one line naming the file and the
field (``workload.mode`` for the pair itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lem.protocol.config import ExperimentConfig


@dataclass(frozen=True)
class ModeSupport:
    """How a backend runs one workload mode, or why it does not.

    ``unsupported_reason``: None when the mode runs. ``max_gpus``: the most GPUs
    (``gpu_count``) the mode runs on; None for any. ``conflicts``: (dotted field, value,
    why) settings the mode cannot honour.
    """

    how: str
    unsupported_reason: str | None = None
    max_gpus: int | None = None
    conflicts: tuple[tuple[str, Any, str], ...] = ()


BACKEND_MODES: dict[str, dict[str, ModeSupport]] = {
    "pytorch": {
        "offline": ModeSupport("fixed batches of batch_size prompts through model.generate"),
        "server": ModeSupport(
            "transformers' continuous batching (ContinuousBatchingManager) on one device",
            max_gpus=1,  # lem does not set up transformers' tensor parallelism
            conflicts=(
                (
                    "pytorch.cache_implementation",
                    "static",
                    "continuous batching keeps its own paged KV cache",
                ),
            ),
        ),
    },
    "vllm": {
        "offline": ModeSupport(
            "the whole prompt set through vLLM's LLM.generate, at most max_num_seqs at once "
            "(not yet run on a GPU)"
        ),
        "server": ModeSupport(
            "vLLM's AsyncLLM engine fed by lem's arrival process, streaming each request's "
            "new tokens (not yet run on a GPU)"
        ),
    },
    "tensorrt": {
        "offline": ModeSupport(
            "the whole prompt set through TensorRT-LLM's LLM.generate_async (streamed), at "
            "most max_batch_size at once (experimental: never run on a GPU)"
        ),
        "server": ModeSupport(
            "TensorRT-LLM's LLM.generate_async fed by lem's arrival process",
            unsupported_reason="not implemented (the TensorRT-LLM worker runs offline only)",
        ),
    },
}


def mode_support(backend: str, mode: str) -> ModeSupport | None:
    """The entry of (``backend``, ``mode``), or None when the table has none."""
    return BACKEND_MODES.get(backend, {}).get(mode)


def _dotted(config: ExperimentConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def capability_problems(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Problems of running ``config.workload.mode`` on ``config.backend``, as (dotted field
    path, problem)."""
    mode, backend = config.workload.mode, config.backend
    support = mode_support(backend, mode)
    if support is None or support.unsupported_reason is not None:
        why = support.unsupported_reason if support else "no entry in lem's capability table"
        return [("workload.mode", f"backend '{backend}' does not support mode '{mode}': {why}")]
    problems: list[tuple[str, str]] = []
    if support.max_gpus is not None and config.gpu_count > support.max_gpus:
        problems.append(
            ("workload.mode",
             f"backend '{backend}' runs mode '{mode}' on at most {support.max_gpus} GPU(s), "
             f"got gpu_count {config.gpu_count}")
        )  # fmt: skip
    for field, value, why in support.conflicts:
        if _dotted(config, field) == value:
            problems.append((field, f"{value!r} cannot be used in mode '{mode}': {why}"))
    if backend == "pytorch" and config.pytorch.compile and mode == "offline":
        if config.pytorch.cache_implementation != "static":
            problems.append(
                ("pytorch.compile", "true needs pytorch.cache_implementation: static "
                 "(transformers compiles the decode step over a static KV cache only)")
            )  # fmt: skip
    elif backend == "pytorch" and config.pytorch.compile:
        problems.append(("pytorch.compile", f"true cannot be used in mode '{mode}'"))
    return problems
