"""Each measurement records the power limit in force during its cycle (issue 19): a limit
changed between cycles, while the worker lives on, shows on the next measurement and in a
new environment row, not the limit the worker read when it started. A whole campaign on a
replayed H100 (``tests/settable_gpu.py``) with the sleep engine standing in for the model."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from lem.coordinator.store.results_store import Store
from lem.protocol.devices.gpu_settings import GpuSettings, Originals, apply, restore
from tests.settable_gpu import DEFAULT_LIMIT_W, UUID, SettableGpu, settable_gpu

__all__ = ["settable_gpu"]  # the fixture

LOAD_S = 3.0  # the first cycle's load: the limit changes while it runs
EXPERIMENT = """\
name: limit
model: {source: builtin, name: lem-tiny}
batch_size: 2
num_prompts: 4
output_tokens: 20
warmup_batches: 0
min_window_s: 0.2
idle_baseline: {enabled: false}
"""


def test_a_limit_changed_between_cycles_is_recorded_on_the_next_measurement(
    settable_gpu: SettableGpu, tmp_path: Path
) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    env = {
        **os.environ,
        **settable_gpu.env(),
        "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend",
        "LEM_SLEEP_LOAD_S": f"{UUID}={LOAD_S}",
    }
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "lem.coordinator", "--log-json", "run", str(experiment),
         "--cycles", "2", "--store", str(tmp_path / "lem.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert coordinator.stderr is not None
    log = []
    try:
        for line in coordinator.stderr:  # the worker reports the first load, after its read
            log.append(line)
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "loading" and event.get("cycle") == 0:
                apply(UUID, GpuSettings(power_limit_w=350))  # as the coordinator would
                break
        log += coordinator.stderr.readlines()
    finally:
        coordinator.wait(timeout=120)
        restore(Originals(UUID, DEFAULT_LIMIT_W))
    assert coordinator.returncode == 0, "".join(log)
    with Store(tmp_path / "lem.db") as store:
        [campaign] = store.list_campaigns()
        [exp] = store.campaign_detail(campaign.id).experiments
        first, second = (r.measurement for r in store.experiment_measurements(exp.id))
    assert first is not None and second is not None
    assert first.worker_id == second.worker_id  # one worker: its start read says 700 W
    assert [g.power_limit_w for g in first.environment.gpus] == [DEFAULT_LIMIT_W]
    assert [g.power_limit_w for g in second.environment.gpus] == [350.0]
    with sqlite3.connect(tmp_path / "lem.db") as db:
        limits = db.execute("SELECT power_limits_w FROM environments ORDER BY id").fetchall()
    assert limits == [("[700.0]",), ("[350.0]",)]
