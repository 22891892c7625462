"""GPU settings an experiment asks for (issue 19): a power limit and locked clocks, set
through NVML by the coordinator before the cycle's warmup and always restored
(``coordinator/execution/gpu_control.py``; ``protocol/devices/gpu_settings.py`` does the
NVML part). Plain data the coordinator validates without touching a GPU."""

from __future__ import annotations

import math

import msgspec

MAX_SETTLE_S = 600.0


class GpuConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``power_limit_w``: the power-management limit of each of the experiment's GPUs (W);
    ``sm_clocks_mhz`` / ``memory_clocks_mhz``: lock those clocks (min = max = the value).
    Unset: left as the GPU has it. ``settle_s``: how long lem waits after changing a
    setting before the cycle goes on (the limit and clocks take effect within a second;
    the temperature takes longer, which the cooldown rules handle)."""

    power_limit_w: float | None = None
    sm_clocks_mhz: int | None = None
    memory_clocks_mhz: int | None = None
    settle_s: float = 2.0

    @property
    def asks(self) -> bool:
        """Whether any setting is asked for."""
        return (self.power_limit_w, self.sm_clocks_mhz, self.memory_clocks_mhz) != (None,) * 3


def gpu_problems(gpu: GpuConfig, device: str) -> list[tuple[str, str]]:
    """Impossible values of ``gpu`` as (dotted field, problem); the device's own limits are
    checked against the GPU when the campaign starts."""
    problems: list[tuple[str, str]] = []
    if gpu.power_limit_w is not None and not (
        math.isfinite(gpu.power_limit_w) and gpu.power_limit_w > 0
    ):
        problems.append(("gpu.power_limit_w", f"must be a number > 0, got {gpu.power_limit_w}"))
    for field in ("sm_clocks_mhz", "memory_clocks_mhz"):
        value = getattr(gpu, field)
        if value is not None and value < 1:
            problems.append((f"gpu.{field}", f"must be >= 1, got {value}"))
    if not 0 <= gpu.settle_s <= MAX_SETTLE_S:
        problems.append(("gpu.settle_s", f"must be 0 to {MAX_SETTLE_S:g}, got {gpu.settle_s}"))
    if gpu.asks and device == "cpu":
        problems.append(("gpu", "sets GPU power limits or clocks: needs device cuda or auto"))
    return problems
