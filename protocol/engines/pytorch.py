"""The PyTorch (transformers) engine: its ``pytorch:`` section, the problems of a
multi-GPU or compiled PyTorch experiment, and its ``SPEC`` (``lem.protocol.engines.spec``)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from lem.protocol.engines.spec import (
    DataParallel,
    EngineEnvironment,
    EngineSpec,
    Experiment,
    ModeSupport,
    Problem,
)

NAME = "pytorch"


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


def pytorch_problems(config: Experiment, pytorch: PyTorchConfig) -> list[Problem]:
    """Problems of ``config``'s multi-GPU settings as (field path, problem) pairs (whatever
    its backend: ``data`` is this engine's alone)."""
    if pytorch.multi_gpu != "data":
        return []
    field = "pytorch.multi_gpu"
    problems: list[Problem] = []
    if config.backend != NAME:
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


def mode_problems(config: Experiment, pytorch: PyTorchConfig) -> list[Problem]:
    """``compile`` in a workload mode that cannot honour it."""
    mode = config.workload.mode
    if pytorch.compile and mode == "offline":
        if pytorch.cache_implementation != "static":
            return [
                ("pytorch.compile", "true needs pytorch.cache_implementation: static "
                 "(transformers compiles the decode step over a static KV cache only)")
            ]  # fmt: skip
    elif pytorch.compile:
        return [("pytorch.compile", f"true cannot be used in mode '{mode}'")]
    return []


def load_key(config: Experiment, pytorch: PyTorchConfig) -> dict[str, Any]:
    """The attention implementation decides the built model; ``data`` one worker per GPU
    (``shard``: one worker over all of them). Read whatever the backend: the load keys of
    experiments from before the registry stay as they were."""
    return {
        "attn": pytorch.attn_implementation,
        **({"multi_gpu": "data"} if pytorch.multi_gpu == "data" else {}),
    }


def hashed(config: Experiment, section: dict[str, Any]) -> dict[str, Any]:
    """The section is hashed whatever the backend (it was there first); fields added since
    are left out at their defaults, so older experiments keep their hashes."""
    if section.get("compile") is None:
        section.pop("compile", None)
    if section.get("multi_gpu") == "shard":
        section.pop("multi_gpu", None)
    return section


def runs_data_parallel(config: Experiment, pytorch: PyTorchConfig) -> bool:
    """``multi_gpu: data``: one worker per GPU (``lem.coordinator.execution.data_parallel``)."""
    return pytorch.multi_gpu == "data"


def one_gpu_section(pytorch: PyTorchConfig) -> PyTorchConfig:
    """The section of one data-parallel shard's worker: a one-GPU experiment like any other."""
    return msgspec.structs.replace(pytorch, multi_gpu="shard")


SPEC = EngineSpec(
    name=NAME,
    section=PyTorchConfig,
    entry_point="lem.workers.engines.pytorch.engine:PyTorchBackend",
    environment=EngineEnvironment(
        locks=("pytorch", "pytorch-cpu"),
        distributions=("torch", "transformers"),
        probe_imports=("torch", "transformers"),
        engine_distribution="torch",
        worker_distribution="transformers",
    ),
    modes={
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
    problems=pytorch_problems,
    mode_problems=mode_problems,
    load_key=load_key,
    load_key_fields=("attn_implementation", "multi_gpu"),
    hashed=hashed,
    data_parallel=DataParallel(applies=runs_data_parallel, one_gpu=one_gpu_section),
)
