"""Worker-side telemetry: start the sampler sidecar, and read windows of what it recorded.

The sidecar (``lem.workers.metering.sampler``) is a separate CUDA-free process writing NVML samples
into SQLite (WAL), so sampling never competes with a host-bound decode loop for the GIL.
All times are ``time.monotonic()`` seconds, comparable between the two processes.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec

from lem.protocol.errors import LemError
from lem.protocol.telemetry import GpuTelemetry, TelemetryWindow
from lem.workers.metering.sampler import COLUMNS


class TelemetryUnavailable(LemError):
    """The sampler could not start or has no data; ``str(exc)`` is the reason."""


def integrate_power_j(t_s: Sequence[float], power_w: Sequence[float]) -> float | None:
    """Energy in J: the trapezoid rule over power samples (W) at times ``t_s`` (s, sorted).

    None with fewer than two samples."""
    if len(t_s) != len(power_w):
        raise ValueError(f"{len(t_s)} times but {len(power_w)} power samples")
    if len(t_s) < 2:
        return None
    return math.fsum(
        (t_s[i + 1] - t_s[i]) * (power_w[i + 1] + power_w[i]) / 2 for i in range(len(t_s) - 1)
    )


def counter_vs_power_relative_diff(
    counter_j: float | None, integrated_j: float | None
) -> float | None:
    """(integrated − counter) / counter, both in J; None if either is missing or counter ≤ 0."""
    if counter_j is None or integrated_j is None or counter_j <= 0:
        return None
    return (integrated_j - counter_j) / counter_j


def _clip(
    points: list[tuple[float, float]], begin_s: float, end_s: float
) -> list[tuple[float, float]]:
    """Points (t s, value) inside [begin, end], plus each edge linearly interpolated where a
    point lies beyond it."""

    def at(t_s: float, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return t_s, a[1] + (b[1] - a[1]) * (t_s - a[0]) / (b[0] - a[0])

    inside = [p for p in points if begin_s <= p[0] <= end_s]
    before = [p for p in points if p[0] < begin_s]
    after = [p for p in points if p[0] > end_s]
    if before and (inside or after):
        inside.insert(0, at(begin_s, before[-1], (inside or after)[0]))
    if after and inside:
        inside.append(at(end_s, inside[-1], after[0]))
    return inside


def _gpu_window(
    uuid: str, rows: list[tuple[Any, ...]], begin_s: float, end_s: float, errors: dict[str, str]
) -> GpuTelemetry:
    """Summarise one GPU's rows (``COLUMNS`` order, a margin beyond the window included)."""
    inside = [r for r in rows if begin_s <= r[0] <= end_s]
    cols = {name: [r[i] for r in inside] for i, name in enumerate(COLUMNS)}

    def series(i: int) -> list[tuple[float, float]]:
        return _clip([(r[0], r[i]) for r in rows if r[i] is not None], begin_s, end_s)

    power, counter = series(COLUMNS.index("power_w")), series(COLUMNS.index("energy_mj"))
    energy_j = integrate_power_j([p[0] for p in power], [p[1] for p in power])
    covered_s = power[-1][0] - power[0][0] if power else 0.0
    mean_w = energy_j / covered_s if energy_j is not None and covered_s > 0 else None
    why = f": {errors['power_w']}" if "power_w" in errors else ""
    power_reason = None if energy_j is not None else f"{len(power)} power sample(s), 2 needed{why}"
    counter_j = (counter[-1][1] - counter[0][1]) / 1000.0 if len(counter) >= 2 else None
    counter_reason: str | None = None
    if counter_j is None or counter_j < 0:
        why = "the counter went backwards" if counter_j is not None else "< 2 counter readings"
        counter_j, counter_reason = None, errors.get("energy_mj", why)
    temps = [t for t in cols["temperature_c"] if t is not None]
    clocks = [c for c in cols["sm_clock_mhz"] if c is not None]
    masks = [m for m in cols["throttle_reasons"] if m is not None]
    pids = {p for j in cols.pop("pids_json") if j is not None for p in json.loads(j)}
    del cols["t_monotonic_s"], cols["gpu_uuid"], cols["energy_mj"]
    return msgspec.convert(
        cols
        | dict(
            gpu_uuid=uuid,
            samples=len(inside),
            t_s=[r[0] - begin_s for r in inside],
            integrated_energy_j=energy_j,
            integrated_energy_unavailable_reason=power_reason,
            power_covered_s=covered_s,
            mean_power_w=mean_w if mean_w is not None or not power else power[0][1],
            counter_energy_j=counter_j,
            counter_energy_unavailable_reason=counter_reason,
            counter_vs_power_relative_diff=counter_vs_power_relative_diff(counter_j, energy_j),
            max_temperature_c=max(temps, default=None),
            temperature_start_c=temps[0] if temps else None,
            temperature_end_c=temps[-1] if temps else None,
            sm_clock_start_mhz=clocks[0] if clocks else None,
            sm_clock_end_mhz=clocks[-1] if clocks else None,
            throttle_reasons_seen=functools.reduce(operator.or_, masks) if masks else None,
            pids_seen=sorted(pids),
            field_errors=errors,
        ),
        GpuTelemetry,
    )


def read_window(
    db_path: str | Path, t_begin_s: float, t_end_s: float, gpu_uuids: Sequence[str] | None = None
) -> TelemetryWindow:
    """The samples of [``t_begin_s``, ``t_end_s``] (monotonic s) per GPU (default: the
    sampler's). Reads what is committed; does not wait for more. TelemetryUnavailable if the
    database cannot be read."""
    errors: dict[str, dict[str, str]] = {}
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=5.0)) as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            step_s = max(float(meta.get(k, 1.0)) for k in ("interval_s", "energy_interval_s"))
            margin_s = 3 * step_s  # enough to find the samples beyond each edge
            rows = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM samples WHERE t_monotonic_s BETWEEN ? AND ?"
                " ORDER BY t_monotonic_s",
                (t_begin_s - margin_s, t_end_s + margin_s),
            ).fetchall()
            for uuid, name, error in conn.execute(
                "SELECT gpu_uuid, field, error FROM field_errors"
            ):
                errors.setdefault(uuid, {})[name] = error
    except sqlite3.Error as exc:
        raise TelemetryUnavailable(f"cannot read telemetry from {db_path}: {exc}") from exc
    uuids = list(gpu_uuids) if gpu_uuids is not None else meta.get("gpus", "").split(",")
    per_gpu = [
        _gpu_window(u, [r for r in rows if r[1] == u], t_begin_s, t_end_s, errors.get(u, {}))
        for u in uuids
        if u
    ]
    return TelemetryWindow(
        t_begin_monotonic_s=t_begin_s,
        t_end_monotonic_s=t_end_s,
        duration_s=t_end_s - t_begin_s,
        per_gpu=per_gpu,
    )


class Sampler:
    """Starts and stops the sampler sidecar for ``gpu_uuids`` (NVML UUIDs), writing ``db_path``.

    Intervals in s. Start it from a long-lived thread (the main one): Linux's parent-death
    signal fires when the *thread* that started the sidecar ends. ``env`` (default: this
    process's) is passed through, so ``LEM_NVML_REPLAY`` works; the sidecar's log goes to
    ``db_path`` + ``.log``.
    """

    def __init__(
        self,
        gpu_uuids: Sequence[str],
        db_path: str | Path,
        interval_s: float = 0.1,
        energy_interval_s: float = 0.1,
        commit_interval_s: float = 0.5,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.gpu_uuids, self.db_path = list(gpu_uuids), Path(db_path)
        self.energy_interval_s = energy_interval_s  # how often the counter is read (s)
        self.log_path = self.db_path.with_name(self.db_path.name + ".log")
        options = {"gpus": ",".join(self.gpu_uuids), "db": self.db_path, "interval-s": interval_s}
        options |= {"energy-interval-s": energy_interval_s, "commit-interval-s": commit_interval_s}
        self._args = [f"--{name}={value}" for name, value in options.items()]
        self._env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = False

    def start(self) -> None:
        """Start the sidecar; FileExistsError if ``db_path`` exists (no stale samples)."""
        if self.db_path.exists():
            raise FileExistsError(f"telemetry database {self.db_path} already exists")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "lem.workers.metering.sampler", *self._args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*args, f"--parent-pid={os.getpid()}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
            )

    def _gpus_sampled_after(self, t_s: float) -> set[str]:
        """GPUs with a committed sample later than ``t_s`` (monotonic s)."""
        try:
            with closing(sqlite3.connect(f"file:{self.db_path}?mode=rw", uri=True)) as conn:
                query = "SELECT DISTINCT gpu_uuid FROM samples WHERE t_monotonic_s > ?"
                return {row[0] for row in conn.execute(query, (t_s,))}
        except sqlite3.Error:  # not created yet
            return set()

    def ready(self, timeout_s: float = 10.0) -> None:
        """Wait (≤ ``timeout_s`` s) for the first committed row; TelemetryUnavailable if none."""
        deadline_s = time.monotonic() + timeout_s
        while not self._gpus_sampled_after(-math.inf):
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else "never started"
                tail = self.log_path.read_text(errors="replace")[-2000:].strip()
                raise TelemetryUnavailable(f"sampler exited ({code}): {tail}")
            if time.monotonic() > deadline_s:
                raise TelemetryUnavailable(f"sampler wrote no sample within {timeout_s} s")
            time.sleep(0.02)
        self._ready = True

    def window(self, t_begin_s: float, t_end_s: float, wait_s: float = 2.0) -> TelemetryWindow:
        """The window [begin, end] (monotonic s). Waits (≤ ``wait_s`` s) for a committed
        sample after ``t_end_s`` on every GPU, asking the sidecar to commit (SIGUSR1)."""
        deadline_s, asked = time.monotonic() + wait_s, False
        while (process := self.process) is not None and process.poll() is None:
            if self._gpus_sampled_after(t_end_s) >= set(self.gpu_uuids):
                break
            if time.monotonic() > deadline_s:
                break
            if self._ready and not asked:  # before ready, SIGUSR1 could still kill it
                process.send_signal(signal.SIGUSR1)
                asked = True
            time.sleep(0.01)
        return read_window(self.db_path, t_begin_s, t_end_s, self.gpu_uuids)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the sidecar (it commits and exits 0), SIGKILL after ``timeout_s`` s; its
        exit code (None if never started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process is not None else None
