"""The values of GPU settings (``gpu_settings.py``): what is asked, what restoring sets
back, what was applied, what a GPU allows; and the error for each."""

from __future__ import annotations

from dataclasses import dataclass

from lem.protocol.errors import BadInput


class GpuSettingsError(BadInput):
    """A GPU setting cannot be checked, applied or restored; ``str(exc)`` says which and why."""


@dataclass(frozen=True)
class GpuSettings:
    """What an experiment asks of its GPUs; None leaves that setting as it is."""

    power_limit_w: float | None = None
    sm_clocks_mhz: int | None = None  # locked SM clocks (min = max = this)
    memory_clocks_mhz: int | None = None  # locked memory clocks

    @property
    def empty(self) -> bool:
        """Whether nothing is asked."""
        return (
            self.power_limit_w is None
            and self.sm_clocks_mhz is None
            and (self.memory_clocks_mhz is None)
        )

    def describe(self) -> str:
        """E.g. ``power limit 300 W, SM clocks 1500 MHz``; ``nothing`` when empty."""
        parts = []
        if self.power_limit_w is not None:
            parts.append(f"power limit {self.power_limit_w:g} W")
        if self.sm_clocks_mhz is not None:
            parts.append(f"SM clocks {self.sm_clocks_mhz} MHz")
        if self.memory_clocks_mhz is not None:
            parts.append(f"memory clocks {self.memory_clocks_mhz} MHz")
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True)
class Originals:
    """A GPU's values before lem changed anything: what restoring it sets back."""

    uuid: str
    power_limit_w: float | None  # the power-management limit in force before (None: untouched)
    reset_sm_clocks: bool = False  # lem locked SM clocks: restore by resetting them
    reset_memory_clocks: bool = False

    def describe(self) -> str:
        """E.g. ``power limit back to 700 W, SM clocks unlocked``."""
        parts = []
        if self.power_limit_w is not None:
            parts.append(f"power limit back to {self.power_limit_w:g} W")
        if self.reset_sm_clocks:
            parts.append("SM clocks unlocked")
        if self.reset_memory_clocks:
            parts.append("memory clocks unlocked")
        return ", ".join(parts) or "nothing to restore"


@dataclass(frozen=True)
class Applied:
    """What was asked of a GPU and what it then reports."""

    uuid: str
    asked: GpuSettings
    power_limit_w: float | None  # the limit in force, read back (None: unreadable)
    sm_clock_mhz: int | None  # the SM clock right after (informative; None: unreadable)


@dataclass(frozen=True)
class Limits:
    """What a GPU allows (None where NVML does not say) or why NVML cannot say."""

    power_limit_w: float | None = None  # in force now
    range_w: tuple[float, float] | None = None  # the power limit's constraints
    max_sm_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None
    unavailable_reason: str | None = None
