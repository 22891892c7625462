"""A replayed NVML: lem's real NVML code runs against a recorded (or synthetic) trace.

After Zeus's replay monitor: with ``LEM_NVML_REPLAY=/path/trace.jsonl`` set,
``lem.protocol.devices.nvml`` uses a ``ReplayNvml`` (pynvml's function names and signatures),
which it finds by name (``nvml.STAND_INS``), not by an import.

Trace (JSON lines), a superset of ``benchmarks/record_nvml_trace.py``'s output. Line 1, the
header: ``{"gpu", "driver"}``, optionally ``"cuda_driver_version"`` (13000 = CUDA 13.0),
``"synthetic": true`` and ``"devices": [{"uuid", "name", "memory_total_bytes",
"power_limit_mw", "mig_mode": 0|1, "energy_counter_supported", "handles_fail" (counted but
lost: every access raises "GPU is lost"), "lost_at_s"}]``; without ``devices``, one device
``gpu`` with uuid ``GPU-replay-0``. Then rows ``{"t_s", "device": index (default 0), "phase",
"energy_mj", "power_mw", "processes": [{"pid", "used_memory_bytes"}], "sm_clock_mhz",
"mem_clock_mhz", "temperature_c", "gpu_util_pct", "mem_util_pct", "mem_used_mib" (else the
processes' sum), "throttle_reasons" (bitmask)}``. A row field left out keeps the device's last
value; a value the trace never gives (null) is "Not Supported".

Time: the first ``nvmlInit()`` starts the replay at the trace's first ``t_s``; replay time is
that plus ``clock() - start`` (s, ``clock`` injectable); later inits do not rewind
(``restart()`` does). A query answers from the device's last row with ``t_s <= replay
time``: a step function, as a counter updating every ~100 ms looks when recorded every ~4 ms.
Past the end the replay loops by default (period: trace span + one median row interval),
each loop adding the trace's total energy to the counter so it stays monotonic;
``past_end="hold"`` instead freezes every value at the last row.

Power limits and locked clocks can be set (``nvml_replay_settings.py``: header fields
``power_limit_min_mw``/``power_limit_max_mw``, ``LEM_NVML_REPLAY_STATE`` to share what was
set between processes); a locked clock holds the trace's clock within its range.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import statistics
import threading
import time
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lem.protocol.devices.nvml import NvmlUnavailable
from lem.protocol.devices.nvml_replay_settings import ReplaySettings
from lem.protocol.errors import LemError

NVML_ERROR_UNINITIALIZED, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_SUPPORTED = 1, 2, 3
NVML_ERROR_NOT_FOUND, NVML_ERROR_GPU_IS_LOST = 6, 15
_MESSAGES = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported",
             4: "Insufficient Permissions", 6: "Not Found"}  # fmt: skip
_MESSAGES[NVML_ERROR_GPU_IS_LOST] = "GPU is lost"

PastEnd = Literal["loop", "hold"]


class NVMLError(LemError):
    """A replayed NVML failure: ``value`` is an ``NVML_ERROR_*`` code, ``str()`` pynvml's text."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"Unknown Error ({self.value})")


def _supported(value: Any) -> Any:
    """``value``, or NVMLError("Not Supported") where the trace has none."""
    if value is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return value


# nvmlDeviceGetMemoryInfo's answer, in bytes (used: the listed compute processes' sum).
Memory = namedtuple("Memory", ["total", "free", "used"])
# One compute process: host pid, usedGpuMemory in bytes (None if the trace lacks it).
Process = namedtuple("Process", ["pid", "usedGpuMemory"])
# An opaque device handle: the device's index in the trace's header.
Handle = namedtuple("Handle", ["index"])
# nvmlDeviceGetUtilizationRates' answer: GPU and memory utilisation in percent.
Utilization = namedtuple("Utilization", ["gpu", "memory"])
NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 2, 0
_CLOCK_FIELDS = {NVML_CLOCK_SM: "sm_clock_mhz", NVML_CLOCK_MEM: "mem_clock_mhz"}
_ABSENT = object()  # a _field default: "the trace has no such field" without raising


@dataclass
class ReplayDevice:
    """One GPU of a trace: its header facts and its rows, forward-filled and sorted by time."""

    uuid: str
    name: str
    memory_total_bytes: int | None = None
    power_limit_mw: int | None = None  # the default limit, in force until one is set
    power_limit_min_mw: int | None = None  # the limit's constraints (nvml_replay_settings.py)
    power_limit_max_mw: int | None = None
    enforce_lag_reads: int = 0  # reads of the enforced limit that still see the old one
    mig_mode: int | None = None  # None (or absent): MIG "Not Supported"
    energy_counter_supported: bool | None = None  # None: if a row has energy_mj
    lost_at_s: float | None = None  # trace time (s) from which every access fails
    times_s: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def energy_per_loop_mj(self) -> int:
        """Energy (mJ) the counter gains from the trace's first row to its last."""
        values = [r["energy_mj"] for r in self.rows if r.get("energy_mj") is not None]
        return int(values[-1] - values[0]) if values else 0


class ReplayNvml(ReplaySettings):
    """A module-like pynvml stand-in answering from a trace (module doc). Unlocked: lem's
    ``nvml_session`` serialises init/shutdown, queries only read, and settings lock their
    own state."""

    NVMLError = NVMLError
    NVML_ERROR_UNINITIALIZED, NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION = 1, 3, 4
    NVML_ERROR_NOT_FOUND, NVML_ERROR_GPU_IS_LOST = 6, 15
    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(
        self,
        path: str | Path,
        clock: Callable[[], float] = time.perf_counter,
        past_end: PastEnd = "loop",
    ) -> None:
        """Read a trace (format: module doc); OSError/ValueError/KeyError if it is unusable."""
        super().__init__()
        lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if not lines or not isinstance(lines[0], dict) or "t_s" in lines[0]:
            raise ValueError(f"{path}: the first line must be the header object")
        self.header, rows = lines[0], lines[1:]
        specs = self.header.get("devices") or [{"uuid": "GPU-replay-0", "name": self.header["gpu"]}]
        keys = ReplayDevice.__dataclass_fields__.keys() - {"lost_at_s", "times_s", "rows"}
        self.devices = [
            ReplayDevice(
                **{k: spec[k] for k in keys if k in spec},
                lost_at_s=-math.inf if spec.get("handles_fail") else spec.get("lost_at_s"),
            )
            for spec in specs
        ]
        for number, row in sorted(enumerate(rows, 2), key=lambda nr: float(nr[1]["t_s"])):
            index = row.get("device", 0)
            if not isinstance(index, int) or not 0 <= index < len(self.devices):
                raise ValueError(f"{path}:{number}: no device {index!r} in the header")
            device = self.devices[index]
            device.rows.append({**(device.rows[-1] if device.rows else {}), **row})
            device.times_s.append(float(row["t_s"]))
        times_s = sorted({t for d in self.devices for t in d.times_s})
        if not times_s or past_end not in ("loop", "hold"):
            raise ValueError(f"{path}: no rows, or past_end {past_end!r} is not loop/hold")
        steps_s = [b - a for a, b in itertools.pairwise(times_s)]
        self.path, self.past_end, self.first_t_s = str(path), past_end, times_s[0]
        self.loop_s = times_s[-1] - times_s[0] + (statistics.median(steps_s) if steps_s else 1.0)
        self._clock, self._inits = clock, 0
        self._start: float | None = None

    def now_s(self) -> float:
        """Replay time on the trace's ``t_s`` scale (s); Uninitialized before any nvmlInit."""
        if self._start is None:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return self.first_t_s + (self._clock() - self._start)

    def restart(self) -> None:
        """Rewind: the next ``nvmlInit`` starts the replay at the trace's first row again."""
        self._start = None

    def lose(self, uuid: str) -> None:
        """Make a GPU disappear now: every later access to it raises "GPU is lost"."""
        self.devices[self._index_of(uuid)].lost_at_s = self.now_s()

    def _index_of(self, uuid: str | bytes) -> int:
        uuids = [d.uuid for d in self.devices]
        if (text := uuid.decode() if isinstance(uuid, bytes) else uuid) not in uuids:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return uuids.index(text)

    def _error(self, code: int) -> Exception:
        return NVMLError(code)

    def _require_init(self) -> None:
        if self._inits == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: Handle | int) -> ReplayDevice:
        """The handle's device (an int is an index) if NVML is started and it is not lost."""
        index = handle.index if isinstance(handle, Handle) else handle
        if not isinstance(index, int) or not 0 <= index < len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        self._require_init()
        device = self.devices[index]
        if device.lost_at_s is not None and self.now_s() >= device.lost_at_s:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return device

    def _field(self, handle: Handle, name: str, default: Any = None) -> tuple[Any, int]:
        """A row field's value at replay time, and how many loops the replay has completed."""
        device = self._device(handle)
        t_s, loops = self.now_s(), 0
        if self.past_end == "loop" and t_s >= self.first_t_s + self.loop_s:
            n, offset_s = divmod(t_s - self.first_t_s, self.loop_s)
            t_s, loops = self.first_t_s + offset_s, int(n)
        i = max(bisect.bisect_right(device.times_s, t_s) - 1, 0)
        return _supported((device.rows[i] if device.rows else {}).get(name, default)), loops

    # pynvml's API.
    def nvmlInit(self) -> None:
        """Start (reference counted); the first call ever starts the replay clock."""
        self._inits += 1
        if self._start is None:
            self._start = self._clock()

    def nvmlShutdown(self) -> None:
        """Release one ``nvmlInit``; Uninitialized if none is held."""
        self._require_init()
        self._inits -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        """The header's ``driver``."""
        self._require_init()
        return str(_supported(self.header.get("driver")))

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        """The header's ``cuda_driver_version`` (e.g. 13000 for CUDA 13.0)."""
        self._require_init()
        return int(_supported(self.header.get("cuda_driver_version")))

    def nvmlDeviceGetCount(self) -> int:
        """Number of devices in the header (lost ones included)."""
        self._require_init()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        """Handle of device ``index``; Invalid Argument out of range, GPU is lost if lost."""
        self._device(index)
        return Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Handle:
        """Handle of the device with this UUID; Not Found if the trace has none."""
        self._require_init()
        return self.nvmlDeviceGetHandleByIndex(self._index_of(uuid))

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        """The device's UUID (``GPU-…``)."""
        return self._device(handle).uuid

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        """The device's product name."""
        return self._device(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> Memory:
        """Total memory in bytes (header); used: ``mem_used_mib``, else the processes' sum."""
        total = int(_supported(self._device(handle).memory_total_bytes))
        used_mib = self._field(handle, "mem_used_mib", _ABSENT)[0]
        if used_mib is not _ABSENT:
            used = int(used_mib * 2**20)
        else:
            processes = self.nvmlDeviceGetComputeRunningProcesses(handle)
            used = sum(p.usedGpuMemory or 0 for p in processes)
        return Memory(total, total - used, used)

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        """``[current, pending]`` MIG mode, both the header's 0/1; Not Supported if null."""
        mode = int(_supported(self._device(handle).mig_mode))
        return [mode, mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        """Cumulative energy in mJ; each completed loop adds the trace's total energy."""
        device = self._device(handle)
        if device.energy_counter_supported is False:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        value, loops = self._field(handle, "energy_mj")
        return int(value) + loops * device.energy_per_loop_mj

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        """Power in mW."""
        return int(self._field(handle, "power_mw")[0])

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        """Current SM (``sm_clock_mhz``) or memory (``mem_clock_mhz``) clock in MHz, within
        the locked range if one is set."""
        device = self._device(handle)
        if clock_type not in _CLOCK_FIELDS:  # graphics: the traces do not record it
            raise NVMLError(
                NVML_ERROR_NOT_SUPPORTED
                if clock_type == NVML_CLOCK_GRAPHICS
                else NVML_ERROR_INVALID_ARGUMENT
            )
        mhz = int(self._field(handle, _CLOCK_FIELDS[clock_type])[0])
        return self.locked_clock(device, clock_type, mhz)

    def nvmlDeviceGetApplicationsClock(self, handle: Handle, clock_type: int) -> int:
        """Application SM/memory clock in MHz (``app_sm_clock_mhz``/``app_mem_clock_mhz``)."""
        return int(self._field(handle, f"app_{_CLOCK_FIELDS[clock_type]}")[0])

    def nvmlDeviceGetMaxClockInfo(self, handle: Handle, clock_type: int) -> int:
        """Highest SM/memory clock in MHz (``max_sm_clock_mhz``/``max_mem_clock_mhz``)."""
        return int(self._field(handle, f"max_{_CLOCK_FIELDS[clock_type]}")[0])

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        """GPU core temperature in °C (``temperature_c``); the only sensor is the GPU's."""
        self._device(handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return int(self._field(handle, "temperature_c")[0])

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization:
        """GPU and memory utilisation in % (``gpu_util_pct``, ``mem_util_pct``)."""
        gpu_pct = int(self._field(handle, "gpu_util_pct")[0])
        return Utilization(gpu_pct, int(self._field(handle, "mem_util_pct")[0]))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        """Clock event (throttle) reasons bitmask (``throttle_reasons``), pynvml's values."""
        return int(self._field(handle, "throttle_reasons")[0])

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[Process]:
        """Compute processes at replay time (none if the trace never lists any)."""
        listed = self._field(handle, "processes", [])[0]
        return [Process(int(p["pid"]), p.get("used_memory_bytes")) for p in listed]


def load_replay(
    path: str | Path, clock: Callable[[], float] = time.perf_counter, past_end: PastEnd = "loop"
) -> ReplayNvml:
    """A replay of the trace at ``path``; ``clock`` in seconds (see the module doc)."""
    return ReplayNvml(path, clock, past_end)


_shared: dict[str, ReplayNvml] = {}
_shared_lock = threading.Lock()


def shared_replay(path: str) -> ReplayNvml:
    """The replay ``LEM_NVML_REPLAY=path`` gives lem: ``install``ed, else loaded (real clock).

    An unusable trace raises ``NvmlUnavailable`` with the reason."""
    key = str(Path(path).resolve())
    with _shared_lock:
        if key not in _shared:
            try:
                _shared[key] = load_replay(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise NvmlUnavailable(f"cannot replay NVML trace {path}: {exc!r}") from exc
        return _shared[key]


def install(replay: ReplayNvml) -> ReplayNvml:
    """Make ``replay`` (e.g. one with a fake clock) the one ``shared_replay`` returns."""
    with _shared_lock:
        _shared[str(Path(replay.path).resolve())] = replay
    return replay


def uninstall_all() -> None:
    """Forget every shared replay (tests call this between cases)."""
    with _shared_lock:
        _shared.clear()


# An H100 SXM's clocks (MHz) as NVML reports them by default.
H100_CLOCKS_MHZ = {"app_sm_clock_mhz": 1980, "app_mem_clock_mhz": 2619,
                   "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619}  # fmt: skip


def write_steady_trace(path: Path, gpu_uuids: tuple[str, ...], because: str) -> Path:
    """Write a synthetic replay trace: H100-like GPUs ``gpu_uuids`` each drawing a steady
    100 W (the counter gains 10 J every 0.1 s) for 2 s; ``because`` says why it is
    synthetic. Returns ``path``."""
    header = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "driver": "580.95.05",
        "synthetic": True,
        "synthetic_because": because,
        "devices": [
            {"uuid": u, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85520809984}
            for u in gpu_uuids
        ],
    }
    rows = [
        {
            "t_s": round(1 + i / 10, 1),
            "device": d,
            "energy_mj": i * 10_000,
            "power_mw": 100_000,
            **H100_CLOCKS_MHZ,
        }
        for i in range(20)
        for d in range(len(gpu_uuids))
    ]
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path
