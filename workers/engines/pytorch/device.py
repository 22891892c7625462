"""Device checks and GPU memory readings for the PyTorch backend (torch imported lazily).

Memory is reported in MiB (2**20 bytes), summed over every visible GPU.
"""

from __future__ import annotations

import importlib.metadata

from lem.workers.engines.base import CudaVisibilityError

MIB_BYTES = 2**20
PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "gguf", "accelerate", "safetensors")
CPU_MEMORY_REASON = "ran on CPU: no GPU memory to report"


def normalise_gpu_uuid(uuid: str) -> str:
    """A GPU UUID without NVML's ``GPU-``/``MIG-`` prefix, lower-case (torch prints none)."""
    text = str(uuid).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def package_versions() -> dict[str, str]:
    """Installed versions of the engine's packages (absent ones are left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def check_cuda_visibility(expected_gpu_uuids: list[str]) -> list[str]:
    """Check torch sees exactly ``expected_gpu_uuids`` in that order; return them as
    NVML-style ``GPU-…`` strings as torch sees them. Must run before CUDA is initialised."""
    import torch

    if torch.cuda.is_initialized():
        raise CudaVisibilityError("CUDA was initialised before the worker checked its GPUs")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count != len(expected_gpu_uuids):
        raise CudaVisibilityError(
            f"torch sees {count} GPU(s), the worker was given {len(expected_gpu_uuids)}: "
            f"{', '.join(expected_gpu_uuids)}"
        )
    seen = [normalise_gpu_uuid(str(torch.cuda.get_device_properties(i).uuid)) for i in range(count)]
    expected = [normalise_gpu_uuid(uuid) for uuid in expected_gpu_uuids]
    if seen != expected:
        raise CudaVisibilityError(f"torch sees GPUs {seen}, the worker was given {expected}")
    return [f"GPU-{uuid}" for uuid in seen]


def peak_memory_mib() -> float:
    """Peak allocated memory since the last reset, summed over visible GPUs, in MiB."""
    import torch

    total_bytes = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    return total_bytes / MIB_BYTES


def reset_peak_memory() -> None:
    """Reset the peak-memory counters of every visible GPU."""
    import torch

    for i in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(i)


def synchronize(device: str) -> None:
    """Wait for every queued kernel of every visible GPU (no-op on CPU)."""
    if device != "cuda":
        return
    import torch

    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


def free_device_memory(device: str) -> None:
    """Collect garbage and return cached CUDA blocks to the driver."""
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
