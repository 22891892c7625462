"""The ``pytorch:`` section of an experiment: settings only the PyTorch backend reads, and
the problems of a multi-GPU PyTorch experiment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from lem.protocol.config import ExperimentConfig


class PyTorchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings only the PyTorch (transformers) backend reads.

    ``cache_implementation``: ``dynamic`` (transformers' default) or ``static`` (a
    preallocated KV cache). ``compile``: None lets transformers decide (it compiles the
    decode step with torch.compile when the cache is static and the device CUDA); false
    never compiles; true compiles (mode ``reduce-overhead``) and needs the static cache.
    ``attn_implementation``: passed to transformers when the model is built (``auto`` lets
    transformers choose).

    ``multi_gpu`` (read when ``gpu_count`` > 1): ``shard`` loads one copy of the model
    spread over the GPUs (``device_map="auto"``; for models that do not fit one GPU);
    ``data`` runs one worker per GPU, each with a full copy of the model and its own
    contiguous share of the prompts, all measured in one window opened together (a start
    barrier); lem merges them into one measurement whose energy is the sum of each GPU's
    own counter (each GPU counted once) — see ``lem docs methodology``, "Data parallel".
    """

    cache_implementation: Literal["dynamic", "static"] = "dynamic"
    compile: bool | None = None
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    multi_gpu: Literal["shard", "data"] = "shard"


def pytorch_problems(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Problems of ``config``'s multi-GPU settings as (field path, problem) pairs."""
    if config.pytorch.multi_gpu != "data":
        return []
    field = "pytorch.multi_gpu"
    problems: list[tuple[str, str]] = []
    if config.backend != "pytorch":
        problems.append((field, f"'data' is the PyTorch backend's, not {config.backend!r}'s"))
    if config.gpu_count < 2:
        problems.append((field, f"'data' needs gpu_count >= 2, got {config.gpu_count}"))
    if config.device == "cpu":
        problems.append((field, "'data' runs one worker per GPU: device must not be cpu"))
    if config.num_prompts < config.gpu_count:
        problems.append(
            (field, f"'data' splits num_prompts ({config.num_prompts}) over "
                    f"{config.gpu_count} GPUs: each needs at least one prompt")
        )  # fmt: skip
    if config.workload.mode != "offline":
        problems.append((field, "'data' supports offline batches only, not server-style load"))
    return problems
