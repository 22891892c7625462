"""NVML access: GPU inventory and the total-energy counter. No CUDA is touched here.

NVML enumerates every GPU of the node whatever ``CUDA_VISIBLE_DEVICES`` says, so GPUs are
always addressed by UUID. Every failure is an ``NvmlUnavailable`` carrying a reason a
person can act on; callers turn it into ``null`` plus that reason, never into 0.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lem.protocol.devices.driver_libs import preload_nvml
from lem.protocol.errors import LemError
from lem.protocol.results import GpuInfo
from lem.protocol.variables import NVML_REPLAY, Variable


class NvmlUnavailable(LemError):
    """NVML (or one of its queries) cannot be used here; ``str(exc)`` is the reason."""


_lock = threading.Lock()
_init_count = 0


# Test doubles come in through this seam, not through an import of production code: with
# a stand-in's variable set (here, or inherited by a worker), NVML is what the function
# ``module:function`` returns for the variable's value. GPU-less tests and demos set
# ``LEM_NVML_REPLAY=trace.jsonl`` for a recorded NVML (``nvml_replay.py``).
STAND_INS: tuple[tuple[Variable, str], ...] = (
    (NVML_REPLAY, "lem.protocol.devices.nvml_replay:shared_replay"),
)


def _pynvml() -> Any:
    for variable, source in STAND_INS:
        if value := variable.get():
            module, _, function = source.partition(":")
            return getattr(importlib.import_module(module), function)(value)
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
        raise NvmlUnavailable(f"the nvidia-ml-py package is not installed ({exc})") from exc
    return pynvml


@contextmanager
def nvml_session() -> Iterator[Any]:
    """Initialise NVML for the duration of the block (reference counted)."""
    global _init_count
    nv = _pynvml()
    with _lock:
        if _init_count == 0:
            try:  # a Nix-built Python's loader does not look where the host's driver is
                preload_nvml()
            except OSError as exc:
                raise NvmlUnavailable(f"the host's libnvidia-ml cannot be loaded: {exc}") from exc
            try:
                nv.nvmlInit()
            except nv.NVMLError as exc:
                raise NvmlUnavailable(f"NVML could not start: {exc}") from exc
        _init_count += 1
    try:
        yield nv
    finally:
        with _lock:
            _init_count -= 1
            if _init_count == 0:
                nv.nvmlShutdown()


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(nv: Any, index: int, handle: Any) -> GpuInfo:
    def optional(fn: Any, *args: Any) -> Any:
        try:
            return fn(handle, *args)
        except nv.NVMLError:
            return None

    memory = optional(nv.nvmlDeviceGetMemoryInfo)
    limit_mw = optional(nv.nvmlDeviceGetEnforcedPowerLimit)
    mig = optional(nv.nvmlDeviceGetMigMode)
    energy_mj = optional(nv.nvmlDeviceGetTotalEnergyConsumption)
    sm, mem = getattr(nv, "NVML_CLOCK_SM", 1), getattr(nv, "NVML_CLOCK_MEM", 2)

    def clock_mhz(name: str, clock_type: int) -> int | None:
        query = getattr(nv, name, None)  # an older or replayed NVML may lack it
        value = optional(query, clock_type) if query is not None else None
        return int(value) if value is not None else None

    return GpuInfo(
        index=index,
        uuid=_as_str(nv.nvmlDeviceGetUUID(handle)),
        name=_as_str(nv.nvmlDeviceGetName(handle)),
        memory_total_mib=memory.total / 2**20 if memory is not None else None,
        power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
        energy_counter_supported=energy_mj is not None,
        mig_mode_enabled=bool(mig[0]) if mig is not None else None,
        app_sm_clock_mhz=clock_mhz("nvmlDeviceGetApplicationsClock", sm),
        app_mem_clock_mhz=clock_mhz("nvmlDeviceGetApplicationsClock", mem),
        max_sm_clock_mhz=clock_mhz("nvmlDeviceGetMaxClockInfo", sm),
        max_mem_clock_mhz=clock_mhz("nvmlDeviceGetMaxClockInfo", mem),
    )


@dataclass(frozen=True)
class Inventory:
    """The node's GPUs as NVML sees them, or why NVML cannot say."""

    gpus: list[GpuInfo]
    driver_version: str | None
    cuda_driver_version: str | None
    unavailable_reason: str | None
    problems: list[str] = field(default_factory=list)  # GPUs NVML counts but cannot describe


def inventory() -> Inventory:
    """List every GPU of the node. Never raises: a failure becomes the reason."""
    try:
        with nvml_session() as nv:
            gpus: list[GpuInfo] = []
            problems: list[str] = []
            for i in range(nv.nvmlDeviceGetCount()):
                try:
                    gpus.append(_describe(nv, i, nv.nvmlDeviceGetHandleByIndex(i)))
                except nv.NVMLError as exc:  # one lost GPU must not hide the others
                    problems.append(f"GPU {i}: {exc}")
            driver = _as_str(nv.nvmlSystemGetDriverVersion())
            try:
                cuda = nv.nvmlSystemGetCudaDriverVersion_v2()
                cuda_version: str | None = f"{cuda // 1000}.{(cuda % 1000) // 10}"
            except nv.NVMLError:
                cuda_version = None
            return Inventory(gpus, driver, cuda_version, None, problems)
    except NvmlUnavailable as exc:
        return Inventory([], None, None, str(exc))
    except Exception as exc:  # an NVMLError mid-listing
        return Inventory([], None, None, f"NVML failed while listing GPUs: {exc}")


class EnergyCounters:
    """Reads the cumulative total-energy counter (mJ, Volta and newer) of chosen GPUs.

    One query costs milliseconds on an H100, so read only at window edges.
    """

    def __init__(self, gpu_uuids: list[str]) -> None:
        self._session = nvml_session()
        self._nv = self._session.__enter__()
        try:
            self._handles = {uuid: self._nv.nvmlDeviceGetHandleByUUID(uuid) for uuid in gpu_uuids}
        except self._nv.NVMLError as exc:
            self.close()
            raise NvmlUnavailable(f"NVML does not know GPU(s) {gpu_uuids}: {exc}") from exc

    def read_mj(self) -> dict[str, int | str]:
        """Counter value in mJ per GPU UUID, or the reason it could not be read."""
        values: dict[str, int | str] = {}
        for uuid, handle in self._handles.items():
            try:
                values[uuid] = int(self._nv.nvmlDeviceGetTotalEnergyConsumption(handle))
            except self._nv.NVMLError as exc:
                values[uuid] = f"energy counter unsupported or unreadable on {uuid}: {exc}"
        return values

    def read_power_w(self, uuid: str) -> float | None:
        """NVML's power reading in W (a ~1 s moving average on most recent GPUs), or None.

        Cheap (~2 µs on an H100): fit for sampling.
        """
        try:
            return float(self._nv.nvmlDeviceGetPowerUsage(self._handles[uuid])) / 1000.0
        except self._nv.NVMLError:
            return None

    def read_power_limit_w(self, uuid: str) -> float | None:
        """The power limit in force on a GPU (W), or None. Read once per measurement: the
        coordinator may change it between cycles (``gpu_settings.py``)."""
        handle = self._handles.get(uuid)
        try:
            limit_mw = (
                self._nv.nvmlDeviceGetEnforcedPowerLimit(handle) if handle is not None else None
            )
        except self._nv.NVMLError:
            return None
        return float(limit_mw) / 1000.0 if limit_mw is not None else None

    def read_temperature_c(self, uuid: str) -> int | None:
        """The GPU's core temperature in °C, or None."""
        try:
            return int(
                self._nv.nvmlDeviceGetTemperature(
                    self._handles[uuid], self._nv.NVML_TEMPERATURE_GPU
                )
            )
        except self._nv.NVMLError:
            return None

    def compute_pids(self, uuid: str) -> set[int] | str:
        """PIDs of the compute processes on a GPU (host PIDs), or the reason unreadable."""
        try:
            processes = self._nv.nvmlDeviceGetComputeRunningProcesses(self._handles[uuid])
            return {p.pid for p in processes}
        except self._nv.NVMLError as exc:
            return f"cannot list compute processes on {uuid}: {exc}"

    def close(self) -> None:
        self._session.__exit__(None, None, None)
