"""GPU power limits and locked clocks: checked, applied, read back and restored (issue 19).

CUDA-free, through lem's NVML (``nvml.py``; a replayed NVML in tests,
``nvml_replay_settings.py``). The safe order, which the campaign runner follows:

1. ``setting_problem`` for every GPU before anything changes (range, support, permission);
2. ``read_originals``, then ``SettingsLedger.record`` them: durable before any change;
3. ``apply``; whatever it raises, the GPU is restored from the recorded originals;
4. ``restore``, then ``SettingsLedger.clear`` that GPU's entry.

A lem killed between 2 and 4 leaves its entry behind; ``lem doctor`` shows entries whose
owner is gone and ``lem doctor --restore-gpu-settings`` restores them
(``SettingsLedger.restore_leftovers``). NVML has no getter for locked clocks, so restoring
clocks means resetting (unlocking) them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from lem.protocol.devices import state_file
from lem.protocol.devices.gpu_settings_values import (
    Applied,
    GpuSettings,
    GpuSettingsError,
    Limits,
    Originals,
)
from lem.protocol.devices.nvml import NvmlUnavailable, nvml_session

__all__ = ["Applied", "GpuSettings", "GpuSettingsError", "Limits", "Originals", "SettingsLedger"]
__all__ += ["apply", "ledger_beside", "limits", "read_originals", "restore", "setting_problem"]

NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION = 3, 4  # NVML's codes (nvml.h)
NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2
LEDGER_NAME = "gpu-settings.json"


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "value", None)
    return code if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    """NVML's text, and what it means where that is not obvious."""
    if _code(exc) == NVML_ERROR_NO_PERMISSION:
        return f"needs root (NVML: {exc})"
    if _code(exc) == NVML_ERROR_NOT_SUPPORTED:
        return f"this GPU does not support it (NVML: {exc})"
    return f"NVML: {exc}"


class _Gpu:
    """One GPU's NVML handle; ``call`` turns an NVMLError into a GpuSettingsError."""

    def __init__(self, nv: Any, uuid: str) -> None:
        self.nv, self.uuid = nv, uuid
        try:
            self.handle = nv.nvmlDeviceGetHandleByUUID(uuid)
        except nv.NVMLError as exc:
            raise GpuSettingsError(f"{uuid}: NVML does not know this GPU ({exc})") from exc

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nv.NVMLError as exc:
            raise GpuSettingsError(f"{self.uuid}: cannot {what}: {_reason(exc)}") from exc

    def optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(handle, *args)``, or None where NVML cannot answer."""
        try:
            return fn(self.handle, *args)
        except self.nv.NVMLError:
            return None


@contextlib.contextmanager
def _gpu(uuid: str) -> Iterator[_Gpu]:
    try:
        with nvml_session() as nv:
            yield _Gpu(nv, uuid)
    except NvmlUnavailable as exc:
        raise GpuSettingsError(f"{uuid}: NVML is unavailable: {exc}") from exc


def limits(uuid: str) -> Limits:
    """The GPU's power limit now, its allowed range and its highest clocks. Never raises."""
    try:
        with _gpu(uuid) as gpu:
            now_mw = gpu.optional(gpu.nv.nvmlDeviceGetPowerManagementLimit)
            constraints = gpu.optional(gpu.nv.nvmlDeviceGetPowerManagementLimitConstraints)
            max_clock = getattr(gpu.nv, "nvmlDeviceGetMaxClockInfo", None)
            sm = gpu.optional(max_clock, NVML_CLOCK_SM) if max_clock else None
            memory = gpu.optional(max_clock, NVML_CLOCK_MEM) if max_clock else None
    except GpuSettingsError as exc:
        return Limits(unavailable_reason=str(exc))
    return Limits(
        power_limit_w=now_mw / 1000 if now_mw is not None else None,
        range_w=(constraints[0] / 1000, constraints[1] / 1000) if constraints else None,
        max_sm_clock_mhz=int(sm) if sm is not None else None,
        max_memory_clock_mhz=int(memory) if memory is not None else None,
    )


def setting_problem(uuid: str, settings: GpuSettings) -> str | None:
    """Why ``settings`` cannot be applied on that GPU, or None: it can. Checks NVML, support,
    the power limit's range and the clocks' maxima, and permission (by setting the power
    limit in force back: a no-op). Never raises."""
    if settings.empty:
        return None
    try:
        with _gpu(uuid) as gpu:
            return _problem(gpu, settings)
    except GpuSettingsError as exc:
        return str(exc)
    except Exception as exc:  # a broken NVML: still one line, never a traceback here
        return f"{uuid}: cannot check GPU settings: {exc!r}"


def _problem(gpu: _Gpu, settings: GpuSettings) -> str | None:
    nv, uuid = gpu.nv, gpu.uuid
    limit_w = settings.power_limit_w
    if limit_w is not None:
        low_mw, high_mw = gpu.call(
            "set a power limit", nv.nvmlDeviceGetPowerManagementLimitConstraints, gpu.handle
        )
        if not low_mw <= limit_w * 1000 <= high_mw:
            return (
                f"{uuid}: power limit {limit_w:g} W is outside the allowed range "
                f"{low_mw / 1000:g}-{high_mw / 1000:g} W"
            )
    clocks = (("SM", settings.sm_clocks_mhz, NVML_CLOCK_SM),
              ("memory", settings.memory_clocks_mhz, NVML_CLOCK_MEM))  # fmt: skip
    max_clock = getattr(nv, "nvmlDeviceGetMaxClockInfo", None)
    for name, mhz, clock in clocks:
        if mhz is None:
            continue
        highest = gpu.optional(max_clock, clock) if max_clock else None
        if mhz <= 0 or (highest is not None and mhz > highest):
            within = f"1-{highest}" if highest is not None else "above 0"
            return f"{uuid}: {name} clocks {mhz} MHz: the GPU allows {within} MHz"
    # Permission: set the limit in force back (a GPU without power limits: the clock
    # setters tell when they are called; NVML cannot lock clocks without changing them).
    now_mw = gpu.optional(nv.nvmlDeviceGetPowerManagementLimit)
    if now_mw is None:
        return None
    try:
        nv.nvmlDeviceSetPowerManagementLimit(gpu.handle, now_mw)
    except nv.NVMLError as exc:
        what = "the power limit" if limit_w is not None else "locked clocks"
        if _code(exc) == NVML_ERROR_NO_PERMISSION:
            return f"setting {what} needs root (NVML refused it on {uuid}: {exc})"
        if limit_w is not None:
            return f"{uuid}: cannot set the power limit: {_reason(exc)}"
    return None


def read_originals(uuid: str, settings: GpuSettings) -> Originals:
    """What restoring ``uuid`` after ``settings`` sets back; read before any change."""
    power_limit_w = None
    if settings.power_limit_w is not None:
        with _gpu(uuid) as gpu:
            now_mw = gpu.call(
                "read the power limit", gpu.nv.nvmlDeviceGetPowerManagementLimit, gpu.handle
            )
        power_limit_w = now_mw / 1000
    return Originals(
        uuid,
        power_limit_w,
        reset_sm_clocks=settings.sm_clocks_mhz is not None,
        reset_memory_clocks=settings.memory_clocks_mhz is not None,
    )


def apply(uuid: str, settings: GpuSettings) -> Applied:
    """Set what ``settings`` asks (power limit, then SM, then memory clocks) and read the
    limit in force and the SM clock back. Raises ``GpuSettingsError`` at the first setting
    refused, with the earlier ones left set: the caller restores from the originals."""
    with _gpu(uuid) as gpu:
        nv, handle = gpu.nv, gpu.handle
        if settings.power_limit_w is not None:
            limit_mw = round(settings.power_limit_w * 1000)
            what = f"set the power limit to {settings.power_limit_w:g} W"
            gpu.call(what, nv.nvmlDeviceSetPowerManagementLimit, handle, limit_mw)
        if (sm := settings.sm_clocks_mhz) is not None:
            gpu.call(f"lock SM clocks at {sm} MHz", nv.nvmlDeviceSetGpuLockedClocks, handle, sm, sm)
        if (mem := settings.memory_clocks_mhz) is not None:
            what = f"lock memory clocks at {mem} MHz"
            gpu.call(what, nv.nvmlDeviceSetMemoryLockedClocks, handle, mem, mem)
        limit = _enforced_limit_mw(gpu, settings.power_limit_w)
        clock = gpu.optional(nv.nvmlDeviceGetClockInfo, NVML_CLOCK_SM)
    return Applied(
        uuid,
        settings,
        power_limit_w=limit / 1000 if limit is not None else None,
        sm_clock_mhz=int(clock) if clock is not None else None,
    )


ENFORCE_WAIT_S = 2.0  # seen lagging on an H100 (docs/measurements.md, section 12)


def _enforced_limit_mw(gpu: _Gpu, asked_w: float | None) -> int | None:
    """The limit in force, mW, read back after a set: NVML's enforced limit can lag the set
    (an H100 still read 500 W just after being set to 300 W), so it is read again until it
    equals ``asked_w`` or ``ENFORCE_WAIT_S`` has passed; then whatever it reads is the answer."""
    nv = gpu.nv
    deadline_s = time.monotonic() + ENFORCE_WAIT_S
    while True:
        limit = gpu.optional(nv.nvmlDeviceGetEnforcedPowerLimit)
        if limit is None:
            fallback = gpu.optional(nv.nvmlDeviceGetPowerManagementLimit)
            return None if fallback is None else int(fallback)
        if asked_w is None or abs(limit - asked_w * 1000) < 1000 or time.monotonic() > deadline_s:
            return int(limit)
        time.sleep(0.05)


def restore(originals: Originals) -> None:
    """Set back what ``originals`` says; every part is tried, and ``GpuSettingsError`` names
    each that failed."""
    failed: list[str] = []
    uuid = originals.uuid
    with _gpu(uuid) as gpu:
        nv, handle = gpu.nv, gpu.handle
        steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
        if originals.power_limit_w is not None:
            what = f"set the power limit back to {originals.power_limit_w:g} W"
            limit_mw = round(originals.power_limit_w * 1000)
            steps.append((what, nv.nvmlDeviceSetPowerManagementLimit, (handle, limit_mw)))
        if originals.reset_sm_clocks:
            steps.append(("unlock SM clocks", nv.nvmlDeviceResetGpuLockedClocks, (handle,)))
        if originals.reset_memory_clocks:
            steps.append(("unlock memory clocks", nv.nvmlDeviceResetMemoryLockedClocks, (handle,)))
        for what, fn, args in steps:
            try:
                gpu.call(what, fn, *args)
            except GpuSettingsError as exc:
                failed.append(str(exc).removeprefix(f"{uuid}: "))
    if failed:
        raise GpuSettingsError(f"{uuid}: {'; '.join(failed)}")


def ledger_beside(store_path: Path) -> Path:
    """The ledger of the store at ``store_path``: ``gpu-settings.json`` in its folder."""
    return store_path.parent / LEDGER_NAME


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    uuid: str
    power_limit_w: float | None
    reset_sm_clocks: bool
    reset_memory_clocks: bool
    owner_pid: int
    host: str

    def originals(self) -> Originals:
        return Originals(
            self.uuid, self.power_limit_w, self.reset_sm_clocks, self.reset_memory_clocks
        )


class _Ledger(msgspec.Struct):
    entries: list[_Entry]
    about: str = ""


ABOUT = (
    "GPU settings lem changed and has not restored yet; once their owner process is gone, "
    "lem doctor --restore-gpu-settings restores them"
)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


class SettingsLedger:
    """The durable record of GPUs lem changed: a JSON file (``<store dir>/gpu-settings.json``,
    ``ledger_beside``), replaced atomically (temp file, fsync, rename; never a non-regular
    file) under a lock on its folder. Written BEFORE any change, cleared entry by entry after
    each restore; removed when empty. Reading it writes nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> list[_Entry]:
        try:
            value = state_file.read_json(self.path)
            return [] if value is None else msgspec.convert(value, _Ledger).entries
        except (OSError, ValueError, msgspec.ValidationError, state_file.NotARegularFile) as exc:
            why = f"{self.path}: not a GPU-settings ledger lem can use: {exc}"
            raise GpuSettingsError(why) from exc

    def _write(self, entries: list[_Entry]) -> None:
        try:
            if entries:
                state_file.write_json(self.path, msgspec.to_builtins(_Ledger(entries, ABOUT)))
            else:
                state_file.remove(self.path)
        except (OSError, state_file.NotARegularFile) as exc:
            why = f"{self.path}: cannot write the GPU-settings ledger: {exc}"
            raise GpuSettingsError(why) from exc

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[_Entry]]:
        """The entries, to change in place, under the folder's lock; written back after."""
        try:
            with state_file.folder_locked(self.path):
                entries = self._read()
                yield entries
                self._write(entries)
        except OSError as exc:  # the folder cannot be made or locked
            why = f"{self.path}: cannot lock the GPU-settings ledger: {exc}"
            raise GpuSettingsError(why) from exc

    def record(self, originals: Sequence[Originals], owner_pid: int) -> None:
        """Record what restoring each GPU sets back, owned by ``owner_pid`` (this host). For
        a GPU already recorded the first originals win: its first power limit is kept and
        the clocks to unlock add up; the new owner takes the entry over."""
        host = socket.gethostname()
        with self._changing() as entries:
            for new in originals:
                old = next((e for e in entries if e.uuid == new.uuid), None)
                if old is None:
                    resets = new.reset_sm_clocks, new.reset_memory_clocks
                    entries.append(_Entry(new.uuid, new.power_limit_w, *resets, owner_pid, host))
                    continue
                if old.power_limit_w is None:
                    old.power_limit_w = new.power_limit_w
                old.reset_sm_clocks |= new.reset_sm_clocks
                old.reset_memory_clocks |= new.reset_memory_clocks
                old.owner_pid, old.host = owner_pid, host

    def clear(self, uuids: Iterable[str]) -> None:
        """Drop the entries of these GPUs (restored)."""
        gone = set(uuids)
        with self._changing() as entries:
            entries[:] = [e for e in entries if e.uuid not in gone]

    def entries(self) -> list[tuple[Originals, int]]:
        """Every entry: (originals, owner pid)."""
        return [(e.originals(), e.owner_pid) for e in self._read()]

    def _leftover_entries(self) -> list[_Entry]:
        host = socket.gethostname()  # another host's owner cannot be checked from here
        return [e for e in self._read() if e.host == host and not _alive(e.owner_pid)]

    def leftovers(self) -> list[Originals]:
        """This host's entries whose owner process is no longer alive."""
        return [e.originals() for e in self._leftover_entries()]

    def restore_leftovers(self) -> list[str]:
        """Restore each leftover and clear its entry; one line each saying what was restored,
        or why it could not be (its entry stays)."""
        lines = []
        for entry in self._leftover_entries():
            originals = entry.originals()
            left = f"left by lem process {entry.owner_pid}, which is gone"
            try:
                restore(originals)
            except GpuSettingsError as exc:
                lines.append(f"{entry.uuid}: not restored ({left}): {exc}; still in {self.path}")
                continue
            self.clear([entry.uuid])
            lines.append(f"{entry.uuid}: restored ({left}): {originals.describe()}")
        return lines
