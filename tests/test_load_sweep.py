"""Load sweeps (``workload.sweep``): planned as the innermost axis; a rate sweep measures
the maximum throughput first (the probe), then its rates as shares of it, and stops at
saturation; a concurrency sweep runs each level."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from lem.coordinator.execution.sweeps import Skip, SweepPoints, probe_config, resolve
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.report.frontier import SLO_SHARE, slo_frontier, sweeps
from lem.coordinator.report.gather import read_campaign
from lem.coordinator.report.page import write_report
from lem.coordinator.store.results_store import Store
from lem.protocol.config import ExperimentConfig
from lem.protocol.results import Measurement
from tests.cli_input import lem
from tests.test_store import measurement

DATA = Path(__file__).parent / "data"
BASE = """\
name: sweep
experiment:
  model: {source: builtin, name: lem-tiny}
  device: cuda
  num_prompts: 60
  input_tokens: 8
  output_tokens: 20
  warmup_batches: 0
  min_window_s: 0
  idle_baseline: {window_s: 0.5, cv_threshold: 0.5, max_wait_s: 5}
  slo: {ttft_ms: 40}
  workload:
    mode: server
    arrival: poisson
    seed: 3
    sweep: {rates: 4, light_fraction: 0.25, top_fraction: 2.0}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_rate_sweep_is_the_innermost_axis_probe_first(tmp_path: Path) -> None:
    plan = plan_campaign(write(tmp_path, BASE + "grid: {output_tokens: [20, 40]}\n"))
    got = [
        (e.position, e.config.output_tokens, e.config.workload.sweep.point)
        for e in plan.experiments
        if e.config.workload.sweep is not None
    ]  # fmt: skip
    assert got == [(p, 20 if p < 5 else 40, p % 5) for p in range(10)]
    names = [e.name for e in plan.experiments][:5]
    assert names == ["output_tokens=20,sweep=max"] + [
        f"output_tokens=20,sweep={k}/4" for k in range(1, 5)
    ]
    assert all(e.config.workload.rate_per_s is None for e in plan.experiments)


def test_a_concurrency_sweep_sets_each_level(tmp_path: Path) -> None:
    text = BASE.replace("arrival: poisson", "arrival: concurrency").replace(
        "sweep: {rates: 4, light_fraction: 0.25, top_fraction: 2.0}",
        "sweep: {concurrencies: [1, 4, 16]}",
    )
    plan = plan_campaign(write(tmp_path, text))
    assert [e.config.workload.concurrency for e in plan.experiments] == [1, 4, 16]
    assert [e.name for e in plan.experiments] == [f"concurrency={c}" for c in (1, 4, 16)]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("arrival: poisson", "arrival: poisson\n    rate_per_s: 3"), "workload.rate_per_s",
         "is set by workload.sweep"),
        (("2.0}\n", "2.0}\norder: shuffled\n"), "order", "shuffled cannot run"),
        (("2.0}\n", "2.0}\ngrid: {workload.sweep.rates: [2, 3]}\n"),
         "grid.workload.sweep.rates", "an axis of its own"),
        (("rates: 4", "rates: 0"), "workload.sweep", "rates (1 to 100)"),
        (("light_fraction: 0.25", "light_fraction: 3"), "workload.sweep", "light_fraction"),
        (("arrival: poisson", "arrival: concurrency"), "workload.sweep.rates",
         "poisson or gamma"),
    ],
)  # fmt: skip
def test_a_bad_sweep_is_refused_naming_its_field(
    tmp_path: Path, change: tuple[str, str], field: str, words: str
) -> None:
    text = BASE.replace(*change)
    assert text != BASE
    with pytest.raises(ConfigError) as caught:
        plan_campaign(write(tmp_path, text))
    assert field in str(caught.value) and words in str(caught.value)


def test_lem_run_refuses_a_sweep(tmp_path: Path) -> None:
    body = BASE.split("experiment:\n", 1)[1]
    experiment = tmp_path / "one.yaml"
    experiment.write_text("\n".join(line[2:] for line in body.splitlines()) + "\n")
    done = lem("run", str(experiment), "--store", str(tmp_path / "lem.db"))
    assert done.returncode == 2, done.stderr
    assert "workload.sweep" in done.stderr and "lem campaign" in done.stderr
    assert not (tmp_path / "lem.db").exists()


# ---- resolution (execution/sweeps.py) with a store stood in by dicts ---------------------


def measured(requests: int, duration_s: float, flags: list[str] | None = None) -> Measurement:
    """A stored measurement of ``requests`` requests in ``duration_s`` (other fields: any)."""
    m = measurement("e", 0)
    work = msgspec.structs.replace(m.work, num_prompts=requests, duration_s=duration_s)
    return msgspec.structs.replace(m, work=work, flags=flags or [])


class FakeStore:
    def __init__(self, plan_configs: list[ExperimentConfig]) -> None:
        self.configs = plan_configs
        self.stored: dict[int, ExperimentConfig] = {}
        self.measurements: dict[int, list[Measurement]] = {}

    def experiment_at(self, position: int) -> tuple[str, ExperimentConfig] | None:
        config = self.stored.get(position)
        return None if config is None else (str(position), config)

    def ok(self, experiment_id: str) -> list[Measurement]:
        return self.measurements.get(int(experiment_id), [])


def test_points_take_their_share_of_the_probes_throughput_and_stop_at_saturation(
    tmp_path: Path,
) -> None:
    plan = list(plan_campaign(write(tmp_path, BASE)).experiments)
    store = FakeStore([e.config for e in plan])
    points = SweepPoints({(0, 0)})
    probe = resolve(plan[0], 0, points, store.experiment_at, store.ok)
    assert isinstance(probe, ExperimentConfig)
    assert probe == probe_config(plan[0].config)
    assert (probe.workload.arrival, probe.workload.concurrency) == ("concurrency", 60)
    assert resolve(plan[1], 0, points, store.experiment_at, store.ok) == Skip(
        "no rate yet: the sweep's probe (maximum throughput) has no measurement; "
        "lem resume runs this point once it has one"
    )
    store.stored[0] = probe
    store.measurements[0] = [measured(60, 0.5)]  # 120 requests per second
    rates = []
    for k in (1, 2, 3):
        config = resolve(plan[k], 0, points, store.experiment_at, store.ok)
        assert isinstance(config, ExperimentConfig)
        rates.append(config.workload.rate_per_s)
        store.stored[k] = config
        points.finished(k, 0)
    assert rates == pytest.approx([120 * 0.25, 120 * (0.25 + 1.75 / 3), 120 * (0.25 + 3.5 / 3)])
    # a rate, once stored, is the point's own: a faster probe later does not move it
    store.measurements[0] = [measured(60, 0.25)]
    again = resolve(plan[2], 1, SweepPoints({(0, 1), (1, 1)}), store.experiment_at, store.ok)
    assert isinstance(again, ExperimentConfig) and again.workload.rate_per_s == rates[1]
    store.measurements[3] = [measured(60, 1.0, ["load_above_capacity"])]
    skip = resolve(plan[4], 0, points, store.experiment_at, store.ok)
    assert isinstance(skip, Skip) and skip.reason.startswith("above saturation: sweep point 3")


def test_a_point_waits_for_the_lower_points_of_its_cycle(tmp_path: Path) -> None:
    plan = list(plan_campaign(write(tmp_path, BASE)).experiments)
    store = FakeStore([e.config for e in plan])
    store.stored[0] = probe_config(plan[0].config)
    store.measurements[0] = [measured(60, 0.5)]
    points = SweepPoints({(0, 0)})
    got: list[object] = []
    waiting = threading.Thread(
        target=lambda: got.append(resolve(plan[2], 0, points, store.experiment_at, store.ok))
    )
    waiting.start()
    time.sleep(0.5)
    assert got == []  # point 1 of cycle 0 is still running (in another lane)
    store.measurements[1] = [measured(60, 1.0, ["load_above_capacity"])]
    store.stored[1] = plan[1].config
    points.finished(1, 0)
    waiting.join(5)
    [skip] = got
    assert isinstance(skip, Skip) and "sweep point 1" in skip.reason
    stopping = threading.Event()
    stopping.set()
    stopped = resolve(plan[3], 1, SweepPoints(set()), store.experiment_at, store.ok, stopping)
    assert isinstance(stopped, Skip)


# ---- a whole sweep: the sleep engine as a server of two slots, on a replayed GPU ------------


def test_a_rate_sweep_runs_to_saturation_and_no_further(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEM_NVML_REPLAY": str(DATA / "h100_load.jsonl"),
        "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend",
        "LEM_SLEEP_SLOTS": "2",  # 2 requests of 20 ms at once: ~100 requests/s at most
    }
    db = tmp_path / "lem.db"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(write(tmp_path, BASE)),
         "--store", str(db)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.read_only(db) as store:
        [campaign] = store.list_campaigns()
        stored: dict[int, ExperimentConfig] = {}
        runs: dict[int, Measurement] = {}
        for position in range(5):
            found = store.experiment_at(campaign.id, position)
            if found is None:
                continue
            stored[position] = found[1]
            [record] = store.experiment_measurements(found[0])
            assert record.measurement is not None
            runs[position] = record.measurement
    probe = runs[0]
    assert stored[0].workload.concurrency == 60  # every request at once
    max_per_s = probe.work.num_prompts / probe.work.duration_s
    assert 20 < max_per_s < 110  # two 20 ms slots: at most 100/s (less on a busy host)
    flagged = [p for p in sorted(runs) if p and "load_above_capacity" in runs[p].flags]
    assert flagged, "no point above the probe's throughput saturated"
    last = flagged[0]
    assert sorted(stored) == list(range(last + 1))  # nothing above the first saturated point
    for p in range(1, last + 1):
        share = 0.25 + (2.0 - 0.25) / 3 * (p - 1)
        assert stored[p].workload.rate_per_s == pytest.approx(share * max_per_s, rel=1e-5)
    assert f"{4 - last} load-sweep cycle(s) not run" in done.stderr
    assert "above saturation" in done.stderr
    assert campaign.status == "finished"
    # the report's energy-versus-SLO frontier is drawn from exactly these points
    [(_, by_rate, points)] = sweeps(read_campaign(db, campaign.id))
    assert by_rate and [p.point for p in points] == list(range(last + 1))
    assert points[0].x == pytest.approx(max_per_s)
    assert [p.x for p in points[1:]] == [stored[p].workload.rate_per_s for p in range(1, last + 1)]
    assert [pt.saturated for pt in points] == [k == last for k in range(last + 1)]
    for pt in points:
        m = runs[pt.point]
        assert m.energy.energy_j is not None and m.latency.goodput is not None
        assert pt.j_per_token == pytest.approx(m.energy.energy_j / m.work.output_tokens)
        assert pt.good_share == m.latency.goodput.good_share
    edge, best = slo_frontier(points)
    meeting = [pt for pt in points if not pt.saturated and (pt.good_share or 0) >= SLO_SHARE]
    assert edge == (max(meeting, key=lambda pt: pt.x) if meeting else None)
    assert best == (min(meeting, key=lambda pt: pt.j_per_token or 0) if meeting else None)
    write_report(db, campaign.id, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="load"' in page and "Energy against load" in page
    assert "the maximum throughput measured first" in page
