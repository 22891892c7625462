"""The whole GPU-side path — coordinator, GPU assignment, worker, counter period, idle
baseline, telemetry sidecar, energy window, the model load's energy, store — on a replayed
H100 (the real load trace tests/data/h100_load.jsonl, looped: ~690 W) with the sleep
backend standing in for the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lem.coordinator.store.results_store import Store
from lem.workers.workload.side_energy import REUSED_REASON
from tests.data.convert_recorded_trace import DEVICE, LOAD_PID

TRACE = Path(__file__).parent / "data" / "h100_load.jsonl"
LOAD_S = 2.0  # the sleep engine's first load
EXPERIMENT = """\
name: replayed
model: {source: builtin, name: lem-tiny}
batch_size: 2
num_prompts: 4
output_tokens: 100
warmup_batches: 1
min_window_s: 2
idle_baseline: {window_s: 0.5, cv_threshold: 0.5, max_wait_s: 5}
grid_intensity_g_per_kwh: 400
"""


def test_gpu_path_end_to_end_on_a_replayed_gpu(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    env = {
        **os.environ,
        "LEM_NVML_REPLAY": str(TRACE),
        "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend",
        "LEM_SLEEP_LOAD_S": f"{DEVICE['uuid']}={LOAD_S}",  # the first cycle's load
    }
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "--log-json", "run", str(experiment),
         "--cycles", "2", "--store", str(tmp_path / "lem.db")],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store(tmp_path / "lem.db") as store:
        [campaign] = store.list_campaigns()
        [exp] = store.campaign_detail(campaign.id).experiments
        records = store.experiment_measurements(exp.id)
    first, second = (r.measurement for r in records)
    assert first is not None and second is not None
    assert first.device == "cuda" and [g.uuid for g in first.environment.gpus] == [DEVICE["uuid"]]
    assert first.energy.energy_j is not None and first.energy.avg_power_w is not None
    assert 600 < first.energy.avg_power_w < 800  # ~690 W recorded; 2 s windows: ±10% bound
    assert first.energy.gpu_energy[0].method == "nvml_energy_counter"
    assert first.energy.energy_counter_period_s is not None
    assert abs(first.energy.energy_counter_period_s - 0.1) < 0.01
    assert first.work.duration_s >= 2.0 and first.work.repetitions >= 1
    assert "short_window" in first.flags  # 2 s windows: the bound is ~10%
    [baseline] = first.energy.idle_baselines
    assert baseline.power_w is not None and baseline.model_resident is False
    assert 687.8 <= baseline.power_w <= 696.5  # "idle" here is the looped load trace
    assert second.energy.idle_baselines[0].measured_at_unix_s == baseline.measured_at_unix_s
    energy = first.energy
    assert energy.energy_j is not None and energy.net_energy_j is not None
    assert energy.net_energy_j <= energy.energy_j
    assert first.observed.telemetry is not None
    assert first.observed.telemetry.per_gpu[0].samples >= 10
    assert first.energy.carbon_g is not None and first.energy.carbon_g > 0
    # The recording's one process (pid 904) is taken for the worker: its own PID is not
    # in the list, and lem reads a lone process as itself (a PID namespace).
    assert first.observed.telemetry.per_gpu[0].pids_seen == [LOAD_PID]
    assert "contaminated" not in first.flags and first.observed.foreign_processes is None
    # the load's energy, apart from the window's: the counter's rise over the first load
    # (~690 W × 2 s; ±10%: a counter update period at each edge), none when it is reused
    load = first.preparation
    assert load.model_reused is False and load.model_load_s == LOAD_S
    assert load.load_energy_j is not None and load.load_energy_unavailable_reason is None
    assert 600 < load.load_energy_j / LOAD_S < 800
    again = second.preparation
    assert again.model_reused is True and again.load_energy_j is None
    assert again.load_energy_unavailable_reason == REUSED_REASON
