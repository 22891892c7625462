"""One model copy spread over several GPUs (``pytorch.multi_gpu: shard``).

Checkpoints (``hf``, ``gguf``) load with transformers' ``device_map="auto"``. Random-weight
models are built on the CPU (seeded, so every run gets the same weights) and then
dispatched with accelerate: ``balanced_device_map`` plans which GPU holds which block
(balanced, never splitting a decoder layer, nothing left on the CPU or disk), and
``dispatch_model`` moves the blocks and adds the hooks that carry activations from GPU to
GPU. Memory sizes are bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lem.workers.engines.base import BackendError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def balanced_device_map(
    model: PreTrainedModel, max_memory_bytes: dict[int, int], dtype: Any = None
) -> dict[str, int]:
    """Which GPU index holds each block of ``model``, balanced over ``max_memory_bytes``'s
    GPUs (index → bytes each may hold). Raises BackendError when the model does not fit
    them without spilling to the CPU or disk."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    limits: dict[int | str, int | str] = {"cpu": 0}
    for index, size_bytes in max_memory_bytes.items():
        limits[index] = size_bytes
    balanced = get_balanced_memory(
        model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype
    )
    balanced["cpu"] = 0
    device_map = infer_auto_device_map(
        model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype
    )
    placed = {name: where for name, where in device_map.items()}
    off_gpu = sorted(name for name, where in placed.items() if not isinstance(where, int))
    if off_gpu:
        raise BackendError(
            f"the model does not fit {len(max_memory_bytes)} GPU(s): "
            f"{len(off_gpu)} block(s) would go to {placed[off_gpu[0]]!r} (e.g. {off_gpu[0]})"
        )
    return {name: int(where) for name, where in placed.items()}


def spread_over_gpus(model: PreTrainedModel, gpu_count: int) -> PreTrainedModel:
    """``model`` (on the CPU) dispatched over the first ``gpu_count`` visible GPUs, each
    allowed its free memory less a 10% margin for activations and the KV cache."""
    import torch
    from accelerate import dispatch_model

    free_bytes = {i: int(torch.cuda.mem_get_info(i)[0] * 0.9) for i in range(gpu_count)}
    device_map = balanced_device_map(model, free_bytes, dtype=model.dtype)
    return dispatch_model(model, device_map=device_map)


def gpus_used(model: PreTrainedModel) -> list[int]:
    """The GPU indices holding part of ``model`` (its ``hf_device_map``, else its device)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        return sorted({int(d) for d in device_map.values() if isinstance(d, int)})
    device = next(model.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []
