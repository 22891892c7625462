"""What a replayed NVML lets lem set: power limits and locked clocks (``gpu_settings.py``).

``ReplaySettings`` gives ``nvml_replay.ReplayNvml`` pynvml's getters and setters for them.
The values set outlive the process that set them when ``LEM_NVML_REPLAY_STATE=state.json``
names a file, as a driver's do: the coordinator sets a limit, a worker reads it, a later
``lem`` restores it. Without the variable each process keeps them in memory. The state::

    {"devices": {UUID: {"power_limit_mw": int, "sm_locked_mhz": [min, max],
                        "mem_locked_mhz": [min, max]}},
     "calls": [{"call": "nvmlDeviceSetPowerManagementLimit", "uuid", "value", "pid"}, …]}

``calls`` lists every set and reset, in order (``value``: mW, ``[min, max]`` MHz, or null),
for tests to assert on (``replay_state``). With ``LEM_NVML_REPLAY_REFUSE_SETS`` set, every
setter fails with Insufficient Permissions (NVML's code 4), as without root; none is recorded.

A device's header may give ``power_limit_min_mw`` and ``power_limit_max_mw`` (the
constraints; defaults: the lesser of 200 W and the header's limit, and the header's
limit); its ``power_limit_mw`` is the default limit and the one in force until one is set.
Its ``enforce_lag_reads: N`` makes the enforced limit lag a set, as an H100's did: the first N
reads of ``nvmlDeviceGetEnforcedPowerLimit`` after a set still return the limit before it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lem.protocol.devices.state_file import folder_locked, read_json, write_json
from lem.protocol.variables import NVML_REPLAY_REFUSE_SETS, NVML_REPLAY_STATE

NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION = 2, 3, 4
DEFAULT_MIN_LIMIT_MW = 200_000
_CLOCK_KEYS = {1: "sm_locked_mhz", 2: "mem_locked_mhz"}  # NVML_CLOCK_SM, NVML_CLOCK_MEM

State = dict[str, Any]


def empty_state() -> State:
    return {"devices": {}, "calls": []}


def replay_state(path: Path) -> State:
    """The state file's content (``empty_state()`` where there is none yet)."""
    value = read_json(path)
    return value if isinstance(value, dict) else empty_state()


_cache: dict[str, tuple[tuple[int, int, int], State]] = {}
_cache_lock = threading.Lock()


def _read_file(path: Path) -> State:
    """The state, re-read only when the file changed (the sampler reads clocks at 10 Hz)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return empty_state()
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        cached = _cache.get(str(path))
        if cached is not None and cached[0] == key:
            return cached[1]
    state = replay_state(path)
    with _cache_lock:
        _cache[str(path)] = (key, state)
    return state


class ReplaySettings:
    """pynvml's power-limit and locked-clock calls for a replayed NVML (module doc)."""

    def __init__(self) -> None:
        self._memory_state = empty_state()
        self._memory_lock = threading.Lock()

    # What the replay supplies.
    def _device(self, handle: Any) -> Any:  # a ReplayDevice (nvml_replay.py)
        raise NotImplementedError

    def _error(self, code: int) -> Exception:  # its NVMLError
        raise NotImplementedError

    # The state.
    def settings_state(self) -> State:
        """The values set (and the calls made), from the state file or from memory."""
        path = NVML_REPLAY_STATE.get()
        if path is None:
            return self._memory_state
        return _read_file(Path(path))

    def _change(self, change: Callable[[State], None]) -> None:
        path = NVML_REPLAY_STATE.get()
        if path is None:
            with self._memory_lock:
                change(self._memory_state)
            return
        state_path = Path(path)
        with folder_locked(state_path):
            state = replay_state(state_path)
            change(state)
            write_json(state_path, state)

    def _settings_of(self, device: Any) -> dict[str, Any]:
        found: dict[str, Any] = self.settings_state()["devices"].get(device.uuid, {})
        return found

    def _set(self, call: str, handle: Any, key: str, value: Any) -> None:
        """Record ``call`` and make ``key`` ``value`` (None: reset) for the handle's GPU."""
        device = self._device(handle)
        if NVML_REPLAY_REFUSE_SETS.get():
            raise self._error(NVML_ERROR_NO_PERMISSION)

        def change(state: State) -> None:
            settings = state["devices"].setdefault(device.uuid, {})
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
            state["calls"].append(
                {"call": call, "uuid": device.uuid, "value": value, "pid": os.getpid()}
            )

        self._change(change)

    def _limits_mw(self, device: Any) -> tuple[int, int]:
        default = device.power_limit_mw
        if default is None:
            raise self._error(NVML_ERROR_NOT_SUPPORTED)
        low = device.power_limit_min_mw
        high = device.power_limit_max_mw
        low = min(DEFAULT_MIN_LIMIT_MW, int(default)) if low is None else int(low)
        return low, int(default) if high is None else int(high)

    def locked_clock(self, device: Any, clock_type: int, value: int) -> int:
        """``value`` (the trace's clock, MHz) held within the locked range, if one is set."""
        locked = self._settings_of(device).get(_CLOCK_KEYS.get(clock_type, ""))
        return value if locked is None else min(max(value, locked[0]), locked[1])

    # pynvml's API.
    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        """The power-management limit in mW: the one set, else the header's."""
        device = self._device(handle)
        self._limits_mw(device)
        return int(self._settings_of(device).get("power_limit_mw", device.power_limit_mw))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        """The power limit in force, mW: the one set, else the header's; the one before
        for the header's ``enforce_lag_reads`` reads after a set (module doc)."""
        device = self._device(handle)
        now_mw = self.nvmlDeviceGetPowerManagementLimit(handle)
        lag = self._settings_of(device).get("enforce_lag")
        if not lag:
            return now_mw

        def count(state: State) -> None:
            left = state["devices"][device.uuid]["enforce_lag"]
            left[1] -= 1
            if left[1] <= 0:
                del state["devices"][device.uuid]["enforce_lag"]

        self._change(count)
        return int(lag[0])

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        """The default limit in mW: the header's ``power_limit_mw``."""
        device = self._device(handle)
        self._limits_mw(device)
        return int(device.power_limit_mw)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        """``[min, max]`` limit in mW (module doc)."""
        return list(self._limits_mw(self._device(handle)))

    def nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit_mw: int) -> None:
        """Set the limit (mW); Invalid Argument outside the constraints."""
        low, high = self._limits_mw(self._device(handle))
        if not low <= int(limit_mw) <= high:
            raise self._error(NVML_ERROR_INVALID_ARGUMENT)
        device = self._device(handle)
        before_mw = self.nvmlDeviceGetEnforcedPowerLimit(handle)
        self._set("nvmlDeviceSetPowerManagementLimit", handle, "power_limit_mw", int(limit_mw))
        if device.enforce_lag_reads > 0:

            def lag(state: State) -> None:
                settings = state["devices"].setdefault(device.uuid, {})
                settings["enforce_lag"] = [before_mw, int(device.enforce_lag_reads)]

            self._change(lag)

    def _lock(self, call: str, handle: Any, key: str, low_mhz: int, high_mhz: int) -> None:
        if not 0 < int(low_mhz) <= int(high_mhz):
            self._device(handle)
            raise self._error(NVML_ERROR_INVALID_ARGUMENT)
        self._set(call, handle, key, [int(low_mhz), int(high_mhz)])

    def nvmlDeviceSetGpuLockedClocks(self, handle: Any, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock within ``[min_mhz, max_mhz]``."""
        self._lock("nvmlDeviceSetGpuLockedClocks", handle, "sm_locked_mhz", min_mhz, max_mhz)

    def nvmlDeviceResetGpuLockedClocks(self, handle: Any) -> None:
        """Unlock the SM clock."""
        self._set("nvmlDeviceResetGpuLockedClocks", handle, "sm_locked_mhz", None)

    def nvmlDeviceSetMemoryLockedClocks(self, handle: Any, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock within ``[min_mhz, max_mhz]``."""
        self._lock("nvmlDeviceSetMemoryLockedClocks", handle, "mem_locked_mhz", min_mhz, max_mhz)

    def nvmlDeviceResetMemoryLockedClocks(self, handle: Any) -> None:
        """Unlock the memory clock."""
        self._set("nvmlDeviceResetMemoryLockedClocks", handle, "mem_locked_mhz", None)
