"""GPU discovery (NVML only, never CUDA) and the one function that assigns GPUs.

``assign_gpus`` is the only place in lem that decides which GPUs a worker sees; the
decision travels to the worker as ``CUDA_VISIBLE_DEVICES`` (UUIDs, which CUDA accepts and
which cannot be reordered) and the worker verifies it before loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from lem.protocol.errors import BadInput
from lem.protocol.results import GpuInfo


class GpuAssignmentError(BadInput):
    """The experiment asks for GPUs this node cannot give; ``str`` says why."""


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs one worker may use. Empty means CPU only (CUDA sees no device)."""

    gpu_uuids: tuple[str, ...]

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.gpu_uuids)

    @property
    def key(self) -> str:
        return self.cuda_visible_devices or "cpu"


CPU_ONLY = GpuAssignment(())


def assign_gpus(
    device: str,
    gpu_count: int,
    available: list[GpuInfo],
    allowed_indices: set[int] | None = None,
    nvml_unavailable_reason: str | None = None,
) -> GpuAssignment:
    """Choose the GPUs for an experiment.

    ``device`` is the config's ``auto``/``cuda``/``cpu``. ``auto`` takes GPUs when the node
    has enough, else runs on CPU; ``cuda`` insists on GPUs. ``allowed_indices`` limits the
    NVML indices lem may use (the ``--gpus`` option). Picks the lowest indices first.
    """
    if device == "cpu":
        return CPU_ONLY
    usable = [g for g in available if allowed_indices is None or g.index in allowed_indices]
    usable.sort(key=lambda g: g.index)
    if len(usable) >= gpu_count:
        return GpuAssignment(tuple(g.uuid for g in usable[:gpu_count]))
    if device == "auto" and not usable:
        return CPU_ONLY
    why = nvml_unavailable_reason or f"this node offers {len(usable)} usable GPU(s)"
    raise GpuAssignmentError(f"needs {gpu_count} GPU(s) but {why}")
