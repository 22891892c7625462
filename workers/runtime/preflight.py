"""Checks every worker runs before its backend loads: fail fast, with a clear message.

A worker must not measure on GPUs other than those it was given, nor after something
initialised CUDA behind its back (CUDA then fixed its device list before the worker could
check it). Each check raises ``CudaVisibilityError``, which the runtime reports as a fatal
``Error``. Engines are not imported here: torch is looked at only if already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

from lem.workers.engines.base import CudaVisibilityError


def check_cuda_not_initialised() -> None:
    """Raise if CUDA was initialised (through an already imported torch) before the
    worker's own initialisation; importing nothing new."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    is_initialized = getattr(cuda, "is_initialized", None)
    if callable(is_initialized) and is_initialized():
        raise CudaVisibilityError(
            "CUDA was initialised before the worker's own initialisation (torch was "
            "imported and used early, e.g. by a sitecustomize or .pth file): the GPUs it "
            "sees cannot be checked; start the worker from a clean interpreter"
        )


def check_gpu_assignment(
    gpu_uuids: list[str],
    cuda_visible_devices: str | None,
    nvml_uuids: Collection[str] | None,
) -> None:
    """Raise unless ``CUDA_VISIBLE_DEVICES`` names exactly ``gpu_uuids`` (in order) and
    NVML knows each of them; ``nvml_uuids`` None: NVML is unavailable (not checked)."""
    visible = [u.strip() for u in (cuda_visible_devices or "").split(",") if u.strip()]
    if cuda_visible_devices is None and gpu_uuids:
        raise CudaVisibilityError(
            f"CUDA_VISIBLE_DEVICES is unset but the worker was given {', '.join(gpu_uuids)}: "
            "it would see every GPU"
        )
    if visible != list(gpu_uuids):
        raise CudaVisibilityError(
            f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} but the worker was given "
            f"{', '.join(gpu_uuids) or 'no GPU'}"
        )
    if nvml_uuids is None:
        return
    unknown = [u for u in gpu_uuids if u not in nvml_uuids]
    if unknown:
        seen = ", ".join(sorted(nvml_uuids)) or "none"
        raise CudaVisibilityError(
            f"the worker was given {', '.join(unknown)}, which NVML does not see here "
            f"(NVML sees: {seen})"
        )


def preflight(
    gpu_uuids: list[str],
    cuda_visible_devices: str | None,
    nvml_uuids: Collection[str] | None,
) -> None:
    """Both checks, CUDA state first."""
    check_cuda_not_initialised()
    check_gpu_assignment(gpu_uuids, cuda_visible_devices, nvml_uuids)
