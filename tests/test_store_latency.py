"""Latency in the results store: the per-request table beside each measurement, summaries
equal to numpy over the samples read back from SQLite, the v2 → v3 migration, old payloads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import numpy as np
import pytest

from lem.coordinator.store.results_store import Store
from lem.coordinator.store.schema import SCHEMA_VERSION
from lem.protocol.config import ExperimentConfig
from lem.protocol.latency import LatencySummary
from lem.protocol.result_payload import decode_measurement, flat_payload, replace_fields
from lem.protocol.results import Measurement
from lem.protocol.workload import SloConfig
from lem.workers.workload.request_latency import latency_fields
from tests.lem_run import lem_run_one
from tests.test_request_latency import synthetic_requests
from tests.test_store import drop_version_4, make_campaign, measurement, rows

PERCENTS = (50, 90, 95, 99)


def with_latency(experiment_id: str, cycle: int = 0, count: int = 120) -> Measurement:
    fields = latency_fields(
        synthetic_requests(count, 30, seed=cycle), 99.0, 12.0, SloConfig(ttft_ms=100.0), None
    )
    return replace_fields(measurement(experiment_id, cycle), **fields)


def stored_samples(db: Path, experiment_id: str, cycle: int) -> dict[str, np.ndarray]:
    """Every latency sample of one cycle, read from SQLite with plain SQL and numpy."""
    query = (
        "SELECT r.ttft_ms, r.e2e_ms, r.tpot_ms, r.queue_ms, r.itl_ms_f32le"
        " FROM request_latencies r JOIN measurements m ON m.id = r.measurement_id"
        " WHERE m.experiment_id = ? AND m.cycle = ? ORDER BY r.request_index"
    )
    table = rows(db, query, experiment_id, cycle)
    return {
        "ttft_ms": np.array([r[0] for r in table]),
        "e2e_ms": np.array([r[1] for r in table]),
        "tpot_ms": np.array([r[2] for r in table if r[2] is not None]),
        "queue_ms": np.array([r[3] for r in table if r[3] is not None]),
        # float32 little-endian, widened to float64 (as lem summarised them)
        "itl_ms": np.concatenate([np.frombuffer(r[4], dtype="<f4") for r in table]).astype(
            np.float64
        ),
    }


def assert_summaries_equal_numpy(m: Measurement, samples: dict[str, np.ndarray]) -> None:
    for name, values in samples.items():
        summary: LatencySummary | None = getattr(m.latency, name)
        assert summary is not None and summary.count == len(values) > 0, name
        for percent in PERCENTS:
            expected = float(np.percentile(values, percent))
            assert getattr(summary, f"p{percent}_ms") == pytest.approx(expected, rel=1e-15), name
        assert summary.mean_ms == pytest.approx(float(np.mean(values)), rel=1e-12)
        assert (summary.min_ms, summary.max_ms) == (values.min(), values.max())


def test_requests_are_stored_in_their_own_table_and_summaries_equal_numpy(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        campaign_id, exp = make_campaign(store, ExperimentConfig())
        recorded = with_latency(exp)
        assert store.record_measurement(recorded)
        assert store.record_measurement(with_latency(exp, 1, count=80))
        assert store.request_records(exp, 0) == recorded.latency.requests
        [first, second] = store.experiment_measurements(exp)
        [summary] = store.campaign_detail(campaign_id).experiments
    assert first.measurement is not None and second.measurement is not None
    assert first.measurement.latency.requests == []  # the payload leaves the table out...
    assert first.measurement.latency.ttft_ms == recorded.latency.ttft_ms  # ...keeps summaries
    assert_summaries_equal_numpy(first.measurement, stored_samples(db, exp, 0))
    assert_summaries_equal_numpy(second.measurement, stored_samples(db, exp, 1))
    [(count,)] = rows(db, "SELECT count(*) FROM request_latencies")
    assert count == 120 + 80
    [(payload,)] = rows(db, "SELECT payload_json FROM measurements WHERE cycle = 0")
    assert len(payload) < 10_000 and '"requests":[]' in payload
    latencies = (first.measurement.latency, second.measurement.latency)
    ttft_p50 = [latency.ttft_ms.p50_ms for latency in latencies if latency.ttft_ms]
    assert summary.median_ttft_p50_ms == pytest.approx(float(np.median(ttft_p50)))
    goodput = recorded.latency.goodput
    assert goodput is not None and 0 < (goodput.good_share or 0) < 1
    assert summary.median_goodput_share is not None


def test_old_payloads_decode_offline_without_latency() -> None:
    old = flat_payload(msgspec.to_builtins(measurement("e")))  # flat, as schema ≤ 4 wrote
    for field in ("workload_mode", "ttft_ms", "itl_ms", "goodput", "requests"):
        del old[field]
    decoded = decode_measurement(msgspec.json.encode(old))
    assert decoded.work.workload_mode == "offline" and decoded.latency.requests == []
    latency = decoded.latency
    assert latency.ttft_ms is None and latency.itl_ms is None and latency.goodput is None


def test_a_version_2_store_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        _, old_exp = make_campaign(store, ExperimentConfig())
        assert store.record_measurement(measurement(old_exp))
    conn = sqlite3.connect(db)
    columns = ("workload_mode", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")
    for column in (*columns, "goodput_share"):
        conn.execute(f"ALTER TABLE measurements DROP COLUMN {column}")
    conn.execute("DROP TABLE request_latencies")
    drop_version_4(conn)
    conn.execute("UPDATE schema_meta SET schema_version = 2")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == 6
        [old] = store.experiment_measurements(old_exp)
        assert old.measurement is not None and old.measurement.latency.ttft_ms is None
        assert store.request_records(old_exp, 0) == []
        _, exp = make_campaign(store, ExperimentConfig())
        assert store.record_measurement(with_latency(exp))
        assert len(store.request_records(exp, 0)) == 120
    [(mode, p99)] = rows(db, "SELECT workload_mode, ttft_p99_ms FROM measurements WHERE "
                             "experiment_id = ?", exp)  # fmt: skip
    assert mode == "offline" and p99 is not None


def test_lem_run_stores_real_token_timings_of_lem_tiny(tmp_path: Path) -> None:
    """The whole path on CPU: worker process, Result message, store, numpy on SQLite."""
    run = lem_run_one(
        tmp_path,
        "name: timed\ndevice: cpu\nmodel: {source: builtin, name: lem-tiny}\n"
        "batch_size: 3\nnum_prompts: 7\ninput_tokens: 8\noutput_tokens: 9\n"
        "prompts: {output_length: {distribution: uniform, min_tokens: 1}}\n"
        "slo: {ttft_ms: 60000, tpot_ms: 60000}\nworkload: {token_timing: true}\n",
        timeout_s=180,
    )
    record, requests, summary, db = run.record, run.requests, run.summary, run.db
    m = record.measurement
    assert m is not None and m.work.workload_mode == "offline"
    assert len(requests) == 7 and sum(r.output_tokens for r in requests) == m.work.output_tokens
    for r in requests:
        assert len(r.itl_ms_f32le) == 4 * (r.output_tokens - 1)
        assert r.ttft_ms < r.e2e_ms or r.output_tokens == 1
    assert_summaries_equal_numpy(m, stored_samples(db, summary.id, 0))
    assert m.latency.goodput is not None and m.latency.goodput.good_share == 1.0
    assert "TTFT ms" in run.stdout and "ITL ms" in run.stdout and "100%" in run.stdout
