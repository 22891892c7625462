"""Real H100 NVML traces (tests/data/h100_*.jsonl) served as lem's NVML in tests, and what
the tests compare against: values computed from the recorded rows themselves."""

from __future__ import annotations

import bisect
import itertools
import json
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lem.protocol.devices import nvml
from lem.protocol.devices.nvml import EnergyCounters, nvml_session
from lem.protocol.devices.nvml_replay import install, load_replay
from lem.protocol.telemetry import TelemetryWindow
from lem.workers.metering.energy import EnergyWindow, WindowEnergy
from lem.workers.metering.sampler import COLUMNS, GpuReader, open_db
from lem.workers.metering.telemetry import read_window
from tests.data import convert_recorded_trace as convert
from tests.test_nvml_replay import FakeClock

DATA = Path(__file__).parent / "data"
UUID = convert.DEVICE["uuid"]
IDLE, LOAD, NO_COUNTER = "h100_idle.jsonl", "h100_load.jsonl", convert.DERIVED
PERIOD_S = 0.1  # what lem detects on these traces (test_the_detected_update_period…)


@dataclass(frozen=True)
class Recorded:
    """A committed trace's rows as the replay serves them: each value holds until the next
    row (a step function of ``t_s``)."""

    header: dict[str, Any]
    rows: list[dict[str, Any]]

    @classmethod
    def load(cls, name: str) -> Recorded:
        header, *rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
        return cls(header, rows)

    @property
    def times_s(self) -> list[float]:
        return [r["t_s"] for r in self.rows]

    def row_at(self, t_s: float) -> dict[str, Any]:
        """The row the replay answers from at ``t_s``: the last one at or before it."""
        return self.rows[max(bisect.bisect_right(self.times_s, t_s) - 1, 0)]

    def counter_mj(self, t_s: float) -> int:
        """The counter (mJ) the replay gives at ``t_s``."""
        return int(self.row_at(t_s)["energy_mj"])

    def updates_s(self) -> list[float]:
        """When the counter advanced: the rows where ``energy_mj`` differs from the last."""
        pairs = itertools.pairwise(self.rows)
        return [b["t_s"] for a, b in pairs if b["energy_mj"] != a["energy_mj"]]

    def power_j(self, begin_s: float, end_s: float) -> float:
        """The exact integral (J) of the recorded power (a step function) over [begin, end]."""
        edges = [begin_s, *(t for t in self.times_s if begin_s < t < end_s), end_s]
        watts = [r["power_mw"] / 1000 for r in self.rows]
        at = [watts[max(bisect.bisect_right(self.times_s, t) - 1, 0)] for t in edges[:-1]]
        return math.fsum(
            (b - a) * w for (a, b), w in zip(itertools.pairwise(edges), at, strict=True)
        )


@dataclass(frozen=True)
class OnReplay:
    """A trace served as lem's NVML, its fake clock set in the trace's own seconds."""

    trace: Recorded
    clock: FakeClock

    def goto(self, t_s: float) -> None:
        self.clock.t_s = t_s - self.trace.rows[0]["t_s"]


def start_replay(monkeypatch: pytest.MonkeyPatch, name: str, tick_s: float = 0.0) -> OnReplay:
    """Serve a trace of tests/data/ as lem's NVML, from its first row at the fake clock's 0
    (the ``replay`` fixture; ``nvml_replay.uninstall_all`` undoes it)."""
    monkeypatch.setattr(nvml, "_init_count", 0)
    monkeypatch.setenv("LEM_NVML_REPLAY", str(DATA / name))
    clock = FakeClock(tick_s)
    served = install(load_replay(DATA / name, clock))
    served.nvmlInit()  # pins the replay's first row to the clock's 0
    served.nvmlShutdown()
    return OnReplay(Recorded.load(name), clock)


def counter_window(
    on: OnReplay, counters: EnergyCounters, begin_s: float, end_s: float
) -> WindowEnergy:
    """lem's energy window over [begin, end] (trace seconds), its edges read on the replay."""
    window = EnergyWindow(counters, [UUID], None, clock=on.clock)
    on.goto(begin_s)
    window.begin()
    on.goto(end_s)
    window.end()
    return window.result()


def sampled(on: OnReplay, begin_s: float, end_s: float, db: Path) -> TelemetryWindow:
    """The sidecar's reader sampling the replay every 0.1 s from before ``begin_s`` to after
    ``end_s`` into a telemetry database (its times: trace seconds), read back over the window."""
    insert = f"INSERT INTO samples VALUES ({', '.join('?' * len(COLUMNS))})"
    with closing(open_db(db)) as conn, nvml_session() as nv:
        reader = GpuReader(nv, UUID, nv.nvmlDeviceGetHandleByUUID(UUID))
        ticks_s = [begin_s - 0.05 + 0.1 * i for i in range(int((end_s - begin_s) / 0.1) + 2)]
        rows = []
        for t_s in ticks_s:
            on.goto(t_s)
            rows.append((t_s, *reader.sample(with_energy=True, with_pids=True)[1:]))
        errors = [(UUID, name, why, ticks_s[0]) for name, why in reader.errors.items()]
        with conn:
            conn.executemany(insert, rows)
            conn.executemany("INSERT INTO field_errors VALUES (?, ?, ?, ?)", errors)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [("interval_s", "0.1")])
    return read_window(db, begin_s, end_s, [UUID])
