"""``lem doctor``'s GPU-settings part: whether each GPU's power limit and locked clocks can
be set here (and within what), and the GPU settings a lem that is gone left changed
(``protocol/devices/gpu_settings.py``), restored only when asked."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Console

from lem.coordinator.cli.common import DEFAULT_STORE, printable
from lem.protocol.devices.gpu_settings import (
    GpuSettings,
    GpuSettingsError,
    SettingsLedger,
    ledger_beside,
    limits,
    setting_problem,
)
from lem.protocol.results import GpuInfo

RESTORE_FLAG = "--restore-gpu-settings"


def _say(console: Console, line: str) -> None:
    console.print(printable(line), markup=False, highlight=False, soft_wrap=True)


def settable_line(gpu: GpuInfo) -> str:
    """One line: whether the GPU's power limit (and locked clocks) can be set here, and the
    allowed range; or why not (root needed, not supported, NVML)."""
    head = f"GPU {gpu.index} ({gpu.uuid}):"
    found = limits(gpu.uuid)
    if found.unavailable_reason is not None:
        return f"{head} GPU settings unknown: {found.unavailable_reason}"
    if found.power_limit_w is None or found.range_w is None:
        return f"{head} the power limit cannot be set: this GPU does not support it"
    problem = setting_problem(gpu.uuid, GpuSettings(power_limit_w=found.power_limit_w))
    if problem is not None:
        return f"{head} power limit and locked clocks cannot be set here: {problem}"
    low_w, high_w = found.range_w
    sm, memory = found.max_sm_clock_mhz, found.max_memory_clock_mhz
    clocks = (
        f"locked clocks up to {sm} MHz SM, {memory} MHz memory"
        if sm is not None and memory is not None
        else "locked clocks too (their highest values unknown)"
    )
    return (
        f"{head} power limit can be set here: {low_w:g}-{high_w:g} W "
        f"(now {found.power_limit_w:g} W); {clocks}"
    )


def render_gpu_settings(console: Console, gpus: list[GpuInfo]) -> None:
    """The settable line of each GPU."""
    for gpu in gpus:
        _say(console, settable_line(gpu))


def render_ledger(console: Console, store_path: Path, restore: bool) -> bool:
    """The GPU settings left changed by a lem that is gone (the ledger beside the store):
    shown, and restored only with ``restore``. False when one could not be restored."""
    ledger = SettingsLedger(ledger_beside(store_path))
    try:
        if restore:
            lines = ledger.restore_leftovers()
            if not lines:
                _say(console, f"GPU settings: nothing left to restore ({ledger.path})")
            for line in lines:
                _say(console, f"GPU settings: {line}")
            return not ledger.leftovers()
        entries, leftovers = ledger.entries(), ledger.leftovers()
    except GpuSettingsError as exc:
        _say(console, f"GPU settings: {exc}")
        return False
    running = len(entries) - len(leftovers)
    if running:
        pids = sorted({pid for _, pid in entries})
        _say(
            console,
            f"GPU settings: {running} GPU(s) changed by lem processes still running or on "
            f"another host (pids {', '.join(map(str, pids))}); each restores its own",
        )
    if not leftovers:
        return True
    _say(console, f"GPU settings left changed by a lem that is gone ({ledger.path}):")
    for originals in leftovers:
        _say(console, f"  {originals.uuid}: to restore: {originals.describe()}")
    store = "" if store_path == DEFAULT_STORE else f" --store {shlex.quote(str(store_path))}"
    _say(console, f"restore them with: lem doctor {RESTORE_FLAG}{store}")
    return True
