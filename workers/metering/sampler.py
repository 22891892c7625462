"""The telemetry sidecar: samples NVML into SQLite from its own CUDA-free process.

    python -m lem.workers.metering.sampler --gpus UUID[,UUID] --db PATH --interval-s 0.1 \\
        --energy-interval-s 0.1 --parent-pid PID

A worker's decode loop is host-bound and holds the GIL, so sampling runs here, not in a
worker thread. This module imports only the standard library and ``lem.protocol.devices.nvml``
(never torch, never CUDA). Every ``interval_s`` (s) it reads per GPU power (W), SM and
memory clocks (MHz), temperature (°C), GPU and memory utilisation (%), memory used (MiB)
and the clock-throttle reasons (bitmask); the energy counter (mJ, ~4 ms a query on an
H100) at most every ``energy_interval_s``; the compute PIDs every ``pids_interval_s``.
Each row's ``t_monotonic_s`` is ``time.monotonic()`` (s) just before that GPU's power read:
CLOCK_MONOTONIC, comparable across the processes of one Linux host. A field that cannot be
read is NULL (never 0), its NVML reason kept in ``field_errors``; a field not due this tick
(energy, PIDs) is NULL too. Rows are committed every ``commit_interval_s`` (WAL, so readers
never block), at once after the first tick, and at the first tick after a SIGUSR1.

It stops, committing what it has, on SIGTERM (exit 0), when its parent dies (Linux
PR_SET_PDEATHSIG sends SIGTERM; a parent-pid check each second backs it up; exit 0), and
exits 2 if NVML or none of its GPUs can be used.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lem.sampler")

COLUMNS = (
    "t_monotonic_s",
    "gpu_uuid",
    "power_w",
    "energy_mj",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temperature_c",
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_mib",
    "throttle_reasons",
    "pids_json",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples(
    t_monotonic_s REAL NOT NULL, gpu_uuid TEXT NOT NULL, power_w REAL, energy_mj INTEGER,
    sm_clock_mhz INTEGER, mem_clock_mhz INTEGER, temperature_c INTEGER, gpu_util_pct INTEGER,
    mem_util_pct INTEGER, mem_used_mib REAL, throttle_reasons INTEGER, pids_json TEXT);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples(t_monotonic_s);
CREATE TABLE IF NOT EXISTS field_errors(
    gpu_uuid TEXT NOT NULL, field TEXT NOT NULL, error TEXT NOT NULL,
    first_t_monotonic_s REAL NOT NULL, PRIMARY KEY (gpu_uuid, field));
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INSERT = f"INSERT INTO samples VALUES ({', '.join('?' * len(COLUMNS))})"
_SIGNALS = {signal.SIGTERM, signal.SIGUSR1}
_PR_SET_PDEATHSIG = 1
_TOLERANCE_S = 1e-6  # float slack when comparing scheduled times (s)

Row = tuple[Any, ...]


def open_db(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a telemetry database in WAL mode with its schema."""
    conn = sqlite3.connect(path, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against a crash of this process
    conn.executescript(SCHEMA)
    return conn


@dataclass
class GpuReader:
    """Reads one GPU's fields; a failed read gives None and files its reason in ``errors``."""

    nv: Any
    uuid: str
    handle: Any
    errors: dict[str, str] = field(default_factory=dict)  # column → NVML's reason (new ones)
    _known: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        nv, old = self.nv, "nvmlDeviceGetCurrentClocksThrottleReasons"  # newer: "event"
        self._reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nv, old
        )

    def _try(self, names: str, read: Callable[[], Any]) -> Any:
        """``read()``, or None with its reason filed (once) under each column in ``names``."""
        try:
            return read()
        except self.nv.NVMLError as exc:
            for name in names.split():
                if name not in self._known:
                    self._known.add(name)
                    self.errors[name] = str(exc)
                    log.warning("%s: cannot read %s: %s", self.uuid, name, exc)
            return None

    def sample(self, with_energy: bool, with_pids: bool) -> Row:
        """One row (``COLUMNS`` order); energy (mJ) and PIDs only when asked for."""
        nv, h = self.nv, self.handle
        t_s = time.monotonic()
        power_mw = self._try("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h))
        energy_mj = (
            self._try("energy_mj", lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h))
            if with_energy
            else None
        )
        sm_mhz = self._try("sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
        mem_mhz = self._try(
            "mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)
        )
        temp_c = self._try(
            "temperature_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
        )
        util = self._try("gpu_util_pct mem_util_pct", lambda: nv.nvmlDeviceGetUtilizationRates(h))
        memory = self._try("mem_used_mib", lambda: nv.nvmlDeviceGetMemoryInfo(h))
        throttle = self._try("throttle_reasons", lambda: self._reasons(h))
        pids_json = None
        if with_pids:
            processes = self._try("pids_json", lambda: nv.nvmlDeviceGetComputeRunningProcesses(h))
            if processes is not None:
                pids_json = json.dumps(sorted({int(p.pid) for p in processes}))
        return (
            t_s,
            self.uuid,
            power_mw / 1000.0 if power_mw is not None else None,
            int(energy_mj) if energy_mj is not None else None,
            int(sm_mhz) if sm_mhz is not None else None,
            int(mem_mhz) if mem_mhz is not None else None,
            int(temp_c) if temp_c is not None else None,
            int(util.gpu) if util is not None else None,
            int(util.memory) if util is not None else None,
            memory.used / 2**20 if memory is not None else None,
            int(throttle) if throttle is not None else None,
            pids_json,
        )


@dataclass
class _Schedule:
    """When the slower reads are next due, on the tick schedule (monotonic s)."""

    every_s: float
    next_s: float = -float("inf")

    def due(self, tick_s: float) -> bool:
        if tick_s + _TOLERANCE_S < self.next_s:
            return False
        self.next_s = tick_s + self.every_s
        return True


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the thread that started it dies."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pid check remains
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _parent_alive(parent_pid: int) -> bool:
    """False once ``parent_pid`` (0: none to watch) is no longer this process's parent."""
    return parent_pid == 0 or os.getppid() == parent_pid


class _Sidecar:
    """The sampling loop: a deadline schedule, sleeping in ``sigtimedwait`` between ticks."""

    def __init__(self, args: argparse.Namespace, conn: sqlite3.Connection) -> None:
        self.args, self.conn = args, conn
        self.stop = self.flush = False
        self.pending: list[Row] = []
        self.errors: list[tuple[str, str, str, float]] = []

    def _wait_until(self, deadline_s: float) -> None:
        """Sleep until ``deadline_s`` (monotonic s); SIGTERM ends it, SIGUSR1 asks a flush."""
        while not self.stop and (remaining_s := deadline_s - time.monotonic()) > 0:
            info = signal.sigtimedwait(_SIGNALS, remaining_s)
            if info is None:
                return
            if info.si_signo == signal.SIGTERM:
                self.stop = True
            else:
                self.flush = True

    def _commit(self) -> None:
        with self.conn:
            self.conn.executemany(_INSERT, self.pending)
            self.conn.executemany(
                "INSERT OR IGNORE INTO field_errors VALUES (?,?,?,?)", self.errors
            )
        self.pending.clear()
        self.errors.clear()

    def run(self, readers: list[GpuReader]) -> int:
        args = self.args
        energy, pids = _Schedule(args.energy_interval_s), _Schedule(args.pids_interval_s)
        parent_check = _Schedule(1.0)
        start_s = last_commit_s = time.monotonic()
        tick = 0
        while not self.stop:
            tick_s = start_s + tick * args.interval_s
            with_energy, with_pids = energy.due(tick_s), pids.due(tick_s)
            for reader in readers:
                self.pending.append(reader.sample(with_energy, with_pids))
                self.errors += [(reader.uuid, k, v, tick_s) for k, v in reader.errors.items()]
                reader.errors.clear()
            now_s = time.monotonic()
            if tick == 0 or self.flush or now_s - last_commit_s >= args.commit_interval_s:
                self._commit()
                self.flush, last_commit_s = False, now_s
            if parent_check.due(tick_s) and not _parent_alive(args.parent_pid):
                log.info("parent %d is gone: stopping", args.parent_pid)
                break
            # Deadlines from the start: no drift; ticks missed while late are skipped.
            tick = max(tick + 1, int((time.monotonic() - start_s) / args.interval_s) + 1)
            self._wait_until(start_s + tick * args.interval_s)
        self._commit()
        log.info("stopped after %d ticks", tick)
        return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lem.workers.metering.sampler")
    parser.add_argument("--gpus", required=True, help="comma-separated NVML GPU UUIDs")
    parser.add_argument("--db", required=True, type=Path, help="SQLite file to append to")
    parser.add_argument("--interval-s", type=float, default=0.1)
    parser.add_argument("--energy-interval-s", type=float, default=0.1)
    parser.add_argument("--pids-interval-s", type=float, default=1.0)
    parser.add_argument("--commit-interval-s", type=float, default=0.5)
    parser.add_argument("--parent-pid", type=int, default=0, help="0: do not watch a parent")
    args = parser.parse_args(argv)
    if min(args.interval_s, args.energy_interval_s, args.pids_interval_s) <= 0:
        parser.error("intervals must be > 0 s")
    return args


def main(argv: list[str] | None = None) -> int:
    # Block first: SIGTERM and SIGUSR1 are taken only in _wait_until, never mid-write.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lem.sampler %(message)s")
    _die_with_parent()
    if not _parent_alive(args.parent_pid):
        return 0  # the parent died before the signal was armed
    from lem.protocol.devices.nvml import NvmlUnavailable, nvml_session

    conn = open_db(args.db)
    meta = {k: str(v) for k, v in vars(args).items()} | {"pid": str(os.getpid())}
    with conn:
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
    sidecar = _Sidecar(args, conn)
    try:
        with nvml_session() as nv:
            readers: list[GpuReader] = []
            for uuid in [u for u in args.gpus.split(",") if u]:
                try:
                    readers.append(GpuReader(nv, uuid, nv.nvmlDeviceGetHandleByUUID(uuid)))
                except nv.NVMLError as exc:
                    log.error("%s: no NVML handle: %s", uuid, exc)
                    sidecar.errors.append((uuid, "handle", str(exc), time.monotonic()))
            if readers:
                return sidecar.run(readers)
            fatal = f"none of the GPUs {args.gpus} can be sampled"
    except NvmlUnavailable as exc:
        fatal = f"NVML unavailable: {exc}"
    try:
        log.error("%s", fatal)
        sidecar._commit()
        with conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('fatal_error', ?)", (fatal,))
        return 2
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
