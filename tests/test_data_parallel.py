"""Data-parallel PyTorch experiments (``pytorch.multi_gpu: data``): the shard split, the
merge, journal recovery, and real coordinators with one sleep-backend worker per replayed
GPU — the start barrier, a killed shard worker, and the stored per-GPU energy."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.coordinator.execution.data_parallel import (
    is_data_parallel,
    shard_configs,
    shard_prompt_counts,
)
from lem.coordinator.execution.resume import ingest_journals
from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.execution.shard_merge import ShardMismatch, merge_shards
from lem.coordinator.execution.supervisor import WorkerHandle
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store
from lem.protocol.config import ExperimentConfig, PromptConfig, config_problems
from lem.protocol.devices.nvml_replay import write_steady_trace
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.journal import Journal
from lem.protocol.messages import Progress
from lem.protocol.result_payload import flat_payload, replace_fields
from lem.protocol.results import (
    Energy,
    Environment,
    GpuEnergy,
    HostEnergy,
    Measurement,
    Memory,
    Preparation,
    Work,
)
from tests.faults.test_resume_faults import SLEEP_BACKEND, lem, query

UUIDS = ("GPU-replay-dp-0", "GPU-replay-dp-1")
CAMPAIGN = """\
name: data-parallel
experiment:
  device: cuda
  gpu_count: 2
  pytorch: {{multi_gpu: data}}
  model: {{source: builtin, name: lem-tiny}}
  input_tokens: 4
  output_tokens: 40
  num_prompts: 5
  batch_size: 1
  warmup_batches: {warmup}
  min_window_s: {window_s}
  idle_baseline: {{window_s: 0.3, cv_threshold: 0.5, max_wait_s: 5}}
cycles: {cycles}
"""


def dp_config(**changes: object) -> ExperimentConfig:
    base = ExperimentConfig(
        gpu_count=2, num_prompts=5, pytorch=PyTorchConfig(multi_gpu="data"), device="cuda"
    )
    return msgspec.structs.replace(base, **changes)


# ---- the split ------------------------------------------------------------------------


def test_shards_hold_contiguous_parts_of_exactly_the_experiments_prompts() -> None:
    assert shard_prompt_counts(5, 2) == [3, 2] and shard_prompt_counts(8, 4) == [2] * 4
    config = dp_config(prompts=PromptConfig(skip=10), gpu_count=3, num_prompts=7)
    shards = shard_configs(config)
    assert [(s.prompts.skip, s.num_prompts) for s in shards] == [(10, 3), (13, 2), (15, 2)]
    assert all(s.gpu_count == 1 and s.pytorch.multi_gpu == "shard" for s in shards)
    assert all(not is_data_parallel(s) for s in shards) and is_data_parallel(config)
    # everything else is the experiment's own setting
    same = {f for f in ExperimentConfig.__struct_fields__} - {"gpu_count", "num_prompts"}
    for field in same - {"prompts", "pytorch"}:
        assert getattr(shards[1], field) == getattr(config, field), field


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"gpu_count": 1}, "needs gpu_count >= 2"),
        ({"device": "cpu"}, "device must not be cpu"),
        ({"num_prompts": 1}, "each needs at least one prompt"),
        ({"backend": "vllm"}, "PyTorch backend's"),
    ],
)
def test_impossible_data_parallel_configs_are_refused(
    changes: dict[str, object], problem: str
) -> None:
    problems = config_problems(dp_config(**changes))
    assert any(f == "pytorch.multi_gpu" and problem in p for f, p in problems), problems


def test_lem_config_validate_names_file_field_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nexperiment:\n  gpu_count: 1\n  device: cuda\n  pytorch: {multi_gpu: data}\n"
    )
    done = lem("config", "validate", str(path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(path) in done.stderr and "pytorch.multi_gpu" in done.stderr


# ---- the merge ------------------------------------------------------------------------


def shard(index: int, start_s: float, duration_s: float, energy_j: float | None) -> Measurement:
    env = Environment(
        hostname="h", python_version="3", lem_version="0", protocol_version=1,
        backend="pytorch", backend_version=None, packages={}, device="cuda",
    )  # fmt: skip
    uuid = UUIDS[index]
    return Measurement(
        experiment_id="e1", cycle=0, worker_id=f"w{index}", started_at_unix_s=start_s - 5,
        device="cuda", environment=env, window_started_at_unix_s=start_s,
        shard_index=index, shard_count=2, shard_group="g1",
        flags=["short_window"] if index else [],
        work=Work(
            duration_s=duration_s, num_prompts=10 + index, batches=3, input_tokens=100,
            output_tokens=1000 * (index + 1),
            output_tokens_per_s=1000 * (index + 1) / duration_s,
        ),
        energy=Energy(
            energy_j=energy_j, energy_unavailable_reason=None if energy_j else "no counter",
            energy_per_output_token_j=None, avg_power_w=None,
            gpu_energy=[GpuEnergy(gpu_uuid=uuid, energy_j=energy_j, method="nvml_energy_counter",
                                  idle_power_w=70.0, net_energy_j=energy_j and energy_j - 70.0)],
            energy_bound_j=2.0, net_energy_j=energy_j and energy_j - 70.0,
        ),
        host_energy=HostEnergy(cpu_energy_j=40.0 + index),
        memory=Memory(
            peak_gpu_memory_load_mib=None, peak_gpu_memory_inference_mib=None,
            gpu_memory_unavailable_reason=None,
        ),
        preparation=Preparation(
            model_load_s=1.0, model_reused=False, model_load_count=1, warmup_batches=1
        ),
    )  # fmt: skip


def test_merge_counts_each_gpu_once_and_spans_the_windows_union() -> None:
    merged = merge_shards([shard(1, 100.2, 9.9, 500.0), shard(0, 100.0, 10.0, 400.0)])
    assert merged.energy.energy_j == pytest.approx(900.0)
    assert [g.gpu_uuid for g in merged.energy.gpu_energy] == list(UUIDS)
    assert merged.work.duration_s == pytest.approx(10.1)  # 100.0 … 110.1
    assert merged.work.output_tokens == 3000 and merged.work.num_prompts == 21
    assert merged.work.output_tokens_per_s == pytest.approx(3000 / 10.1)
    assert merged.energy.energy_per_output_token_j == pytest.approx(0.3)
    assert merged.energy.net_energy_j == pytest.approx(760.0)
    assert merged.energy.energy_bound_j == pytest.approx(4.0)
    assert merged.host_energy.cpu_energy_j == pytest.approx(41.0)  # host-wide: not added
    assert set(merged.flags) == {"short_window", "host_energy_overlap"}
    assert merged.worker_id == "w0+w1" and merged.shard_count == 1
    assert [(s.shard_index, s.energy_j) for s in merged.shards] == [(0, 400.0), (1, 500.0)]


def test_merge_refuses_incomplete_or_mixed_sets_and_keeps_missing_energy_null() -> None:
    with pytest.raises(ShardMismatch):
        merge_shards([shard(0, 100.0, 10.0, 400.0)])
    other_attempt = msgspec.structs.replace(shard(1, 100.0, 10.0, 1.0), shard_group="g2")
    with pytest.raises(ShardMismatch):
        merge_shards([shard(0, 100.0, 10.0, 400.0), other_attempt])
    merged = merge_shards([shard(0, 100.0, 10.0, 400.0), shard(1, 100.0, 10.0, None)])
    energy = merged.energy
    assert energy.energy_j is None and energy.energy_unavailable_reason == "no counter"
    assert merged.energy.energy_per_output_token_j is None  # never a partial sum


def test_journal_recovery_stores_complete_attempts_merged_and_nothing_else(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "lem.db")
    campaign_id = store.create_campaign("c", "c.yaml", "h", 2, experiment_count=1)
    experiment_id = store.ensure_experiment(campaign_id, 0, "e1", dp_config(), "k", {})
    journals = tmp_path / "journals"
    journals.mkdir()
    cycle1 = {"experiment_id": experiment_id, "cycle": 1, "shard_group": "g9"}
    entries = {
        "w0.jsonl": [
            msgspec.structs.replace(shard(0, 100.0, 10.0, 400.0), experiment_id=experiment_id),
            msgspec.structs.replace(shard(0, 200.0, 10.0, 400.0), **cycle1),  # its pair died
        ],
        "w1.jsonl": [
            msgspec.structs.replace(shard(1, 100.0, 10.0, 500.0), experiment_id=experiment_id)
        ],
    }
    for name, measurements in entries.items():
        journal = Journal(journals / name)
        for m in measurements:
            journal.append(m)
    assert ingest_journals(store, campaign_id, journals) == 1
    assert ingest_journals(store, campaign_id, journals) == 0  # idempotent
    assert store.ok_pairs(campaign_id) == {(0, 0)}
    [record] = store.experiment_measurements(experiment_id)
    assert record.measurement is not None
    assert record.measurement.energy.energy_j == pytest.approx(900.0)
    store.close()


# ---- real coordinators and sleep-backend workers on two replayed GPUs ------------------


@pytest.fixture
def replayed_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEM_WORKER_BACKEND", SLEEP_BACKEND)
    trace = write_steady_trace(tmp_path / "two_gpus.jsonl", UUIDS, "data parallel on CPU")
    monkeypatch.setenv("LEM_NVML_REPLAY", str(trace))


def campaign_file(tmp_path: Path, window_s: float = 0.5, cycles: int = 2, warmup: int = 0) -> Path:
    path = tmp_path / "dp.yaml"
    path.write_text(CAMPAIGN.format(window_s=window_s, cycles=cycles, warmup=warmup))
    return path


def payloads(db: Path) -> list[dict[str, Any]]:
    rows = query(db, "SELECT payload_json FROM measurements WHERE status = 'ok' ORDER BY cycle")
    return [flat_payload(json.loads(str(r[0]))) for r in rows]


@pytest.mark.usefixtures("replayed_gpus")
def test_a_data_parallel_campaign_stores_one_measurement_per_cycle_with_each_gpu_once(
    tmp_path: Path,
) -> None:
    path, db = campaign_file(tmp_path), tmp_path / "lem.db"
    done = lem("campaign", str(path), "--store", str(db))
    assert done.returncode == 0, done.stderr
    stored = payloads(db)
    assert len(stored) == 2
    for m in stored:
        shards = m["shards"]
        assert len(shards) == 2
        assert [s["gpu_uuids"] for s in shards] == [[UUIDS[0]], [UUIDS[1]]]
        assert [s["num_prompts"] % n for s, n in zip(shards, (3, 2), strict=True)] == [0, 0]
        starts = [s["window_started_at_unix_s"] for s in shards]
        assert max(starts) - min(starts) < 0.25  # opened together at the barrier
        gpu_j = [g["energy_j"] for g in m["gpu_energy"]]
        assert len(gpu_j) == 2 and m["energy_j"] == pytest.approx(sum(gpu_j))
        assert m["output_tokens"] == sum(s["output_tokens"] for s in shards)
        assert len(str(m["worker_id"]).split("+")) == 2
    rows = query(db, "SELECT gpu_uuid FROM gpu_energy ORDER BY measurement_id, gpu_uuid")
    assert [r[0] for r in rows] == list(UUIDS) * 2


@pytest.mark.usefixtures("replayed_gpus")
def test_a_shard_that_is_ready_late_holds_the_others_window_at_the_barrier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_SLEEP_LOAD_S", f"{UUIDS[1]}=1.5")  # GPU 1's worker loads slowly
    path, db = campaign_file(tmp_path, cycles=1), tmp_path / "lem.db"
    store = Store(db)
    armed_unix_s: dict[str, float] = {}

    def hook(exp: object, cycle: int, event: Progress, handle: WorkerHandle) -> None:
        if event.phase == "armed":
            armed_unix_s[handle.spec.assignment.gpu_uuids[0]] = time.time()

    plan = plan_campaign(path)
    outcome = CampaignRunner(plan, store, RunOptions(store_path=db), on_progress=hook).run()
    store.close()
    assert outcome.measured == 1 and not outcome.failures
    assert armed_unix_s[UUIDS[1]] - armed_unix_s[UUIDS[0]] > 1.0  # GPU 0 waited armed
    [m] = payloads(db)
    starts = [s["window_started_at_unix_s"] for s in m["shards"]]
    assert max(starts) - min(starts) < 0.25
    assert min(starts) > armed_unix_s[UUIDS[1]] - 0.1  # neither opened before GPU 1 armed


@pytest.mark.usefixtures("replayed_gpus")
def test_a_killed_shard_worker_fails_the_attempt_which_is_retried_whole(
    tmp_path: Path,
) -> None:
    path, db = campaign_file(tmp_path, window_s=1.0, cycles=1), tmp_path / "lem.db"
    store = Store(db)
    killed: list[str] = []

    def hook(exp: object, cycle: int, event: Progress, handle: WorkerHandle) -> None:
        if event.phase == "measuring" and not killed:
            killed.append(handle.spec.worker_id)
            os.kill(handle.process.pid, signal.SIGKILL)

    plan = plan_campaign(path)
    outcome = CampaignRunner(plan, store, RunOptions(store_path=db), on_progress=hook).run()
    store.close()
    assert killed and outcome.measured == 1 and not outcome.failures
    [m] = payloads(db)
    assert killed[0] not in str(m["worker_id"])  # a fresh worker replaced the killed one
    attempts = query(db, "SELECT attempts FROM cycle_states")
    assert attempts == [(2,)]


def test_merged_latency_pools_every_shards_requests_on_the_merged_windows_clock() -> None:
    from lem.protocol.latency import RequestRecord
    from lem.protocol.latency_stats import float32_le

    def request(index: int, start_ms: float, ttft_ms: float) -> RequestRecord:
        gaps_ms = [10.0, 12.0]
        return RequestRecord(
            index=index, pass_index=0, batch_index=0, input_tokens=4, output_tokens=3,
            scheduled_ms=None, start_ms=start_ms, queue_ms=0.0, ttft_ms=ttft_ms,
            e2e_ms=ttft_ms + sum(gaps_ms), tpot_ms=sum(gaps_ms) / 2,
            itl_ms_f32le=float32_le(gaps_ms),
        )  # fmt: skip

    first = replace_fields(
        shard(0, 100.0, 10.0, 400.0), requests=[request(0, 0.0, 20.0), request(1, 5.0, 30.0)]
    )
    second = replace_fields(
        shard(1, 100.5, 10.0, 500.0), requests=[request(0, 1.0, 40.0), request(1, 2.0, 50.0)]
    )
    merged = merge_shards([first, second])
    assert [r.index for r in merged.latency.requests] == [0, 1, 2, 3]
    # shard 1's window opened 0.5 s after shard 0's: its requests move 500 ms later
    assert [r.start_ms for r in merged.latency.requests] == [0.0, 5.0, 501.0, 502.0]
    assert merged.latency.ttft_ms is not None and merged.latency.ttft_ms.count == 4
    assert merged.latency.ttft_ms.p50_ms == pytest.approx(35.0)  # median of 20, 30, 40, 50
    itl = merged.latency.itl_ms
    assert itl is not None and itl.count == 8  # 2 gaps × 4 requests
    without = merge_shards([first, shard(1, 100.5, 10.0, 500.0)])  # a shard timed nothing
    assert without.latency.ttft_ms is None and without.latency.requests == []
    assert without.latency.latency_unavailable_reason is not None
