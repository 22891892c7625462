"""``lem doctor``: what can run here — GPUs, NVML, driver libraries, energy counters, workers.

Each backend's interpreter is probed in its own process (importing the engine takes
seconds); the probes run side by side, started first, while this process asks NVML, the
energy counters, the driver libraries and RAPL. Nothing is cached: every run checks anew.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lem.coordinator.cli.common import DEFAULT_STORE
from lem.coordinator.cli.doctor_gpu import render_gpu_settings, render_ledger
from lem.coordinator.execution.environments import KNOWN_BACKENDS, resolve_python
from lem.coordinator.execution.gpus import CPU_ONLY
from lem.coordinator.execution.launcher import worker_environment
from lem.protocol.devices.counter_period import CounterPeriod, detect_update_periods
from lem.protocol.devices.driver_libs import (
    CUDA_SONAME,
    NVML_SONAME,
    DriverSearch,
    driver_libs_root,
    find_driver_libs,
    link_folder,
    loaded_library,
)
from lem.protocol.devices.nvml import EnergyCounters, Inventory, NvmlUnavailable, inventory
from lem.protocol.devices.rapl import discover_rapl_zones
from lem.protocol.engines.registry import ENGINE_NAMES
from lem.protocol.variables import NVML_REPLAY, VARIABLES, Variable, set_variables

BACKENDS = list(ENGINE_NAMES)
MIG_LABELS = {True: "enabled: energy is the parent GPU's", False: "disabled", None: "n/a"}


def probe_backend(
    backend: str, timeout_s: float = 120.0, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Run ``lem.workers.runtime.probe`` in the backend's interpreter; never raises, never builds
    (a Nix environment not built yet is reported as such). ``env``: the probe's environment
    (default: a CPU worker's)."""
    resolved = resolve_python(backend)
    python = resolved.python
    if resolved.nix_drv is not None and not Path(python).exists():
        problem = (
            f"not built yet: the first worker builds it (nix-store --realise {resolved.nix_drv})"
        )
        return {"usable": False, "problem": problem, "python_executable": python}
    try:
        done = _run_niced([python, "-m", "lem.workers.runtime.probe", backend], timeout_s, env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {
            "usable": False,
            "problem": f"cannot run {python}: {exc}",
            "python_executable": python,
        }
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return {"usable": False, "problem": f"{python} failed: {last}", "python_executable": python}
    report: dict[str, object] = msgspec.json.decode(done.stdout)
    return report


def _run_niced(
    cmd: list[str], timeout_s: float, env: Mapping[str, str] | None
) -> subprocess.CompletedProcess[bytes]:
    """Run a probe at a lower CPU priority: probes run while the host checks time the energy
    counter's update period by polling it, and a starved poller reads a wrong period."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else worker_environment(CPU_ONLY),
    )
    with contextlib.suppress(OSError):  # already gone, or not allowed: it still runs
        os.setpriority(os.PRIO_PROCESS, proc.pid, PROBE_NICENESS)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


PROBE_NICENESS = 10


def render_doctor(
    console: Console, store_path: Path = DEFAULT_STORE, restore_gpu_settings: bool = False
) -> bool:
    """Print the report; True when at least one backend can run and no GPU setting left
    changed by a lem that is gone failed to restore (``restore_gpu_settings``: restore
    them first; else only show them)."""
    env = worker_environment(CPU_ONLY)  # once, here: it may make the driver link folder
    with ThreadPoolExecutor(max_workers=len(BACKENDS), thread_name_prefix="lem-probe") as pool:
        probes = {backend: pool.submit(probe_backend, backend, env=env) for backend in BACKENDS}
        restored = True
        if restore_gpu_settings:  # before the GPUs are described: they show what is now
            restored = render_ledger(console, store_path, restore=True)
        _render_host(console)
        if not restore_gpu_settings:
            render_ledger(console, store_path, restore=False)
        reports = {backend: probe.result() for backend, probe in probes.items()}
    return _render_environments(console, reports) and restored


def _render_host(console: Console) -> None:
    """GPUs and NVML, the driver libraries, RAPL."""
    inv = inventory()
    gpus = Table(title="GPUs (NVML)")
    columns = ("index", "name", "uuid", "memory MiB", "power limit W", "energy counter", "MIG")
    for column in columns:
        gpus.add_column(column)
    periods = _counter_periods([g.uuid for g in inv.gpus if g.energy_counter_supported])
    for g in inv.gpus:
        gpus.add_row(
            str(g.index),
            g.name,
            g.uuid,
            f"{g.memory_total_mib:.0f}" if g.memory_total_mib else "null",
            f"{g.power_limit_w:.0f}" if g.power_limit_w else "null",
            _counter_label(g.energy_counter_supported, periods.get(g.uuid)),
            MIG_LABELS[g.mig_mode_enabled],
        )
    if inv.unavailable_reason:
        console.print(
            f"NVML: unavailable — {inv.unavailable_reason}. Experiments run on CPU; energy is null."
        )
    else:
        console.print(
            f"NVML: driver {inv.driver_version}, CUDA driver API {inv.cuda_driver_version}"
        )
        for problem in inv.problems:
            console.print(f"NVML cannot describe {problem}: it is not used")
        console.print(gpus)
        render_gpu_settings(console, inv.gpus)
    console.print(driver_line(inv), markup=False, highlight=False, soft_wrap=True)
    rapl = discover_rapl_zones()
    if rapl.unavailable_reason:
        console.print(f"CPU/DRAM energy (RAPL): unavailable — {rapl.unavailable_reason}")
    else:
        names = ", ".join(z.name for z in rapl.zones)
        console.print(f"CPU/DRAM energy (RAPL): {len(rapl.zones)} zone(s): {names}")


def _render_environments(console: Console, reports: Mapping[str, dict[str, object]]) -> bool:
    """The probed worker environments; True when at least one backend can run."""
    envs = Table(title="Worker environments")
    for column in ("backend", "python", "engine versions", "usable", "problem"):
        envs.add_column(column)
    any_usable = False
    for backend, report in reports.items():
        packages = report.get("packages") or {}
        assert isinstance(packages, dict)
        usable = bool(report.get("usable"))
        any_usable |= usable
        envs.add_row(
            backend + (" (experimental)" if KNOWN_BACKENDS[backend].experimental else ""),
            str(report.get("python_executable")),
            ", ".join(f"{k} {v}" for k, v in packages.items()),
            "yes" if usable else "no",
            str(report.get("problem") or ""),
        )
    console.print(envs)
    return any_usable


def driver_line(
    inv: Inventory,
    search: DriverSearch | None = None,
    environ: Mapping[str, str] | None = None,
    maps: Path = Path("/proc/self/maps"),
) -> str:
    """Which libnvidia-ml this process loaded, its driver version and where it came from;
    where libcuda is; the link folder workers get (``protocol/devices/driver_libs.py``)."""
    env = os.environ if environ is None else environ
    found = find_driver_libs(search)
    loaded = loaded_library("libnvidia-ml", maps)
    nvml = found.libraries.get(NVML_SONAME)
    if loaded is not None:
        origin = found.source if loaded in found.libraries.values() else "the loader's own search"
        version = inv.driver_version or "version unknown"
        parts = [f"{NVML_SONAME} from {loaded} ({origin}), driver {version}"]
    elif trace := NVML_REPLAY.get(env):
        parts = [f"NVML replayed from {trace}, no driver library loaded"]
    elif found.source is None:
        parts = [f"not found (searched {', '.join(found.searched)})"]
    elif nvml is not None:
        parts = [f"{NVML_SONAME} not loaded; found {nvml} ({found.source})"]
    else:
        parts = [f"{NVML_SONAME} not found in {found.source}"]
    if found.source is not None:
        parts.append(f"{CUDA_SONAME}: {found.libraries.get(CUDA_SONAME) or 'not found'}")
    try:
        folder = link_folder(found, driver_libs_root(env))
        given = f"{folder} ({found.file_count()} libraries)" if folder else "no driver libraries"
    except OSError as exc:
        given = f"no driver libraries ({exc})"
    return f"NVIDIA driver: {'; '.join(parts)}; workers get {given}"


def _counter_periods(gpu_uuids: list[str]) -> dict[str, CounterPeriod]:
    """Each GPU's energy-counter update period (~1 s of reads), or nothing if NVML fails."""
    if not gpu_uuids:
        return {}
    try:
        counters = EnergyCounters(gpu_uuids)
    except NvmlUnavailable:
        return {}
    try:
        return detect_update_periods(counters.read_mj)
    finally:
        counters.close()


def _counter_label(supported: bool, period: CounterPeriod | None) -> str:
    if not supported:
        return "no: energy will be null"
    if period is None or period.period_s is None:
        why = period.reason if period is not None else "not measured"
        return f"yes; update period unknown ({why})"
    return f"yes; updates every {period.period_s * 1000:.0f} ms"


def render_variables(
    console: Console, every: bool = False, environ: Mapping[str, str] | None = None
) -> None:
    """The "lem variables" section: each ``LEM_*`` variable set here with its meaning (and
    any ``LEM_*`` name lem does not read); ``every``: every variable lem reads, set or not
    (``protocol/variables.py``)."""
    set_here = set_variables(environ)
    if not every and not set_here:
        console.print("lem variables: none set (lem doctor --variables lists them all)")
        return
    rows: list[tuple[str, str, Variable | None]] = list(set_here)
    if every:
        rows = []
        for variable in VARIABLES:
            members = [(name, value) for name, value, of in set_here if of is variable]
            rows += [(name, value, variable) for name, value in members or [(variable.name, "")]]
        rows += [row for row in set_here if row[2] is None]
    table = Table(title="lem variables" if every else "lem variables (set here)")
    for column in ("variable", "value", "meaning", "read by", "when unset"):
        table.add_column(column)
    for name, value, entry in rows:
        if entry is None:
            cells = (name, value, "not a variable lem reads (a typo?)", "", "")
        else:
            cells = (name, entry.shown(value), entry.meaning, entry.read_by, entry.default)
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
