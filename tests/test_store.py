"""The SQLite results store, against real files in tmp_path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.coordinator.store.results_store import Store, StoreError, new_id
from lem.coordinator.store.schema import SCHEMA_VERSION
from lem.protocol.config import ExperimentConfig, ModelConfig, config_hash, load_key
from lem.protocol.result_payload import decode_measurement, replace_fields
from lem.protocol.results import (
    Energy,
    Environment,
    GpuEnergy,
    GpuInfo,
    Measurement,
    Memory,
    Preparation,
    Work,
)

NO_NVML = "NVML unavailable: no driver"


def environment(hostname: str = "host-a") -> Environment:
    return Environment(
        hostname=hostname,
        python_version="3.11.9",
        lem_version="0.1.0",
        protocol_version=1,
        backend="pytorch",
        backend_version="2.4.0",
        packages={"torch": "2.4.0"},
        device="cuda:0",
        gpus=[GpuInfo(index=0, uuid="GPU-0", name="H100", power_limit_w=700.0)],
        driver_version="550.54",
        cuda_version="12.4",
    )


def measurement(
    experiment_id: str,
    cycle: int = 0,
    *,
    tok_per_s: float = 100.0,
    energy_j: float | None = 50.0,
    env: Environment | None = None,
) -> Measurement:
    output_tokens = 256
    duration_s = output_tokens / tok_per_s
    has_energy = energy_j is not None
    return Measurement(
        experiment_id=experiment_id,
        cycle=cycle,
        worker_id="w-1",
        started_at_unix_s=1_700_000_000.0,
        device="cuda:0",
        work=Work(
            duration_s=duration_s,
            num_prompts=8,
            batches=8,
            input_tokens=256,
            output_tokens=output_tokens,
            output_tokens_per_s=tok_per_s,
        ),
        energy=Energy(
            energy_j=energy_j,
            energy_unavailable_reason=None if has_energy else NO_NVML,
            energy_per_output_token_j=energy_j / output_tokens if energy_j is not None else None,
            avg_power_w=energy_j / duration_s if energy_j is not None else None,
            gpu_energy=[
                GpuEnergy(
                    gpu_uuid="GPU-0",
                    energy_j=energy_j,
                    method="nvml_energy_counter" if has_energy else "unavailable",
                    unavailable_reason=None if has_energy else NO_NVML,
                )
            ],
        ),
        memory=Memory(
            peak_gpu_memory_load_mib=1024.0,
            peak_gpu_memory_inference_mib=2048.0,
            gpu_memory_unavailable_reason=None,
        ),
        preparation=Preparation(
            model_load_s=1.5, model_reused=cycle > 0, model_load_count=1, warmup_batches=1
        ),
        environment=env or environment(),
    )


def make_campaign(store: Store, *configs: ExperimentConfig, cycles: int = 3) -> list[str]:
    """Create a campaign; return [campaign_id, experiment ids...]."""
    configs = configs or (ExperimentConfig(name="small"),)
    exps = [(new_id("e"), cfg, load_key(cfg)) for cfg in configs]
    campaign_id = store.create_campaign("demo", "configs/demo.yaml", "abc123", cycles, exps)
    return [campaign_id, *(e[0] for e in exps)]


def drop_version_6(conn: sqlite3.Connection) -> None:
    """Undo schema version 6 on an open file: what a version-5 store lacks (version 5
    changed no table, so this is a version-5 and, payloads aside, a version-4 store)."""
    conn.execute("ALTER TABLE campaigns DROP COLUMN error")


def drop_version_4(conn: sqlite3.Connection) -> None:
    """Undo schema versions 4 (resume) and later on an open file: what a version-3 store
    lacks."""
    drop_version_6(conn)
    conn.execute("DROP TABLE cycle_states")
    for column in ("source_text", "coordinator_host", "coordinator_pid"):
        conn.execute(f"ALTER TABLE campaigns DROP COLUMN {column}")
    conn.execute("ALTER TABLE measurements DROP COLUMN attempts")
    conn.execute("ALTER TABLE experiments DROP COLUMN provenance_json")


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "lem-results" / "lem.db"


@pytest.fixture
def store(db: Path) -> Any:
    with Store(db) as s:
        yield s


def test_new_id_shape() -> None:
    a, b = new_id("c"), new_id("c")
    assert a != b
    prefix, stamp, rand = a.split("-")
    assert prefix == "c" and len(stamp) == 15 and stamp[8] == "T" and len(rand) == 6


def test_schema_created_with_version_and_wal(store: Store, db: Path) -> None:
    assert db.exists()
    assert store.schema_version() == SCHEMA_VERSION
    assert rows(db, "SELECT schema_version FROM schema_meta") == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"campaigns", "experiments", "measurements", "gpu_energy", "environments"} <= tables
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_reopen_keeps_data(db: Path) -> None:
    with Store(db) as s:
        campaign_id = make_campaign(s)[0]
    with Store(db) as s:
        assert [c.id for c in s.list_campaigns()] == [campaign_id]


def test_newer_schema_refused(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_foreign_database_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a lem store"):
        Store(db)


def test_not_a_database_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(db)


def test_create_campaign_stores_experiments(store: Store) -> None:
    a = ExperimentConfig(name="a", batch_size=4, model=ModelConfig(source="random", name="x"))
    b = ExperimentConfig(name="b", output_tokens=64, model=ModelConfig(dtype="bfloat16"))
    campaign_id, exp_a, exp_b = make_campaign(store, a, b, cycles=2)
    assert campaign_id.startswith("c-")
    detail = store.campaign_detail(campaign_id)
    c = detail.campaign
    assert (c.name, c.source_path, c.source_hash, c.status) == (
        "demo",
        "configs/demo.yaml",
        "abc123",
        "running",
    )
    assert (c.experiment_count, c.cycles, c.measurements_ok) == (2, 2, 0)
    assert [e.id for e in detail.experiments] == [exp_a, exp_b]
    assert [e.position for e in detail.experiments] == [0, 1]
    ea, eb = detail.experiments
    assert msgspec.json.decode(ea.config_json, type=ExperimentConfig) == a
    assert msgspec.json.decode(eb.config_json, type=ExperimentConfig) == b
    assert ea.config_hash == config_hash(a) and ea.load_key == load_key(a)
    assert (ea.model_source, ea.model_name, ea.batch_size, ea.dtype) == ("random", "x", 4, "auto")
    assert (eb.output_tokens, eb.dtype, eb.median_output_tokens_per_s) == (64, "bfloat16", None)


def test_create_campaign_is_atomic(store: Store, db: Path) -> None:
    cfg = ExperimentConfig()
    dup = new_id("e")
    with pytest.raises(StoreError):
        store.create_campaign("bad", None, None, 1, [(dup, cfg, "k"), (dup, cfg, "k")])
    assert rows(db, "SELECT COUNT(*) FROM campaigns") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM experiments") == [(0,)]
    assert store.list_campaigns() == []


def test_record_measurement_and_medians(store: Store, db: Path) -> None:
    campaign_id, exp = make_campaign(store)
    assert store.record_measurement(measurement(exp, 0, tok_per_s=100.0, energy_j=25.6))
    assert store.record_measurement(measurement(exp, 1, tok_per_s=300.0, energy_j=51.2))
    assert store.record_measurement(measurement(exp, 2, tok_per_s=200.0, energy_j=76.8))
    [summary] = store.list_campaigns()
    assert summary.id == campaign_id
    assert (summary.measurements_ok, summary.measurements_failed) == (3, 0)
    assert summary.median_output_tokens_per_s == 200.0
    assert summary.median_energy_per_output_token_j == pytest.approx(0.2)
    assert summary.energy_unavailable_reasons == []
    [e] = store.campaign_detail(campaign_id).experiments
    assert e.cycles_ok == 3 and e.median_energy_per_output_token_j == pytest.approx(0.2)
    assert e.median_avg_power_w == pytest.approx(60.0)  # median of 10, 60 and 60 W
    assert rows(db, "SELECT COUNT(*) FROM gpu_energy") == [(3,)]
    records = store.experiment_measurements(exp)
    assert [r.cycle for r in records] == [0, 1, 2]
    stored_as = msgspec.structs.replace(
        measurement(exp, 1, tok_per_s=300.0, energy_j=51.2), store_schema_version=SCHEMA_VERSION
    )
    assert records[1].measurement == stored_as  # as sent, stamped with the schema version


def test_null_energy_summarised_with_reason(store: Store, db: Path) -> None:
    campaign_id, exp = make_campaign(store)
    store.record_measurement(measurement(exp, 0, energy_j=None))
    store.record_measurement(measurement(exp, 1, energy_j=None))
    [summary] = store.list_campaigns()
    assert summary.median_energy_per_output_token_j is None
    assert summary.median_output_tokens_per_s == 100.0
    assert summary.energy_unavailable_reasons == [NO_NVML]
    [e] = store.campaign_detail(campaign_id).experiments
    assert e.median_energy_per_output_token_j is None and e.median_avg_power_w is None
    assert e.energy_unavailable_reasons == [NO_NVML]
    assert rows(db, "SELECT energy_j, energy_per_output_token_j FROM measurements") == [
        (None, None),
        (None, None),
    ]
    assert rows(db, "SELECT energy_j, method FROM gpu_energy")[0] == (None, "unavailable")


def test_partial_energy_median_over_measured_only(store: Store) -> None:
    _, exp = make_campaign(store)
    store.record_measurement(measurement(exp, 0, energy_j=None))
    store.record_measurement(measurement(exp, 1, energy_j=25.6))
    [summary] = store.list_campaigns()
    assert summary.median_energy_per_output_token_j == pytest.approx(0.1)
    assert (summary.measurements_with_energy, summary.measurements_ok) == (1, 2)
    assert summary.energy_unavailable_reasons == []


def test_duplicate_measurement_ignored(store: Store, db: Path) -> None:
    _, exp = make_campaign(store)
    assert store.record_measurement(measurement(exp, 0, tok_per_s=100.0)) is True
    assert store.record_measurement(measurement(exp, 0, tok_per_s=999.0)) is False
    assert store.record_failure(exp, 0, "late failure", "w-1") is False
    assert rows(db, "SELECT COUNT(*), MAX(output_tokens_per_s) FROM measurements") == [(1, 100.0)]
    assert rows(db, "SELECT COUNT(*) FROM gpu_energy") == [(1,)]


def test_failure_recorded_with_reason(store: Store, db: Path) -> None:
    campaign_id, exp = make_campaign(store)
    store.record_measurement(measurement(exp, 0))
    assert store.record_failure(exp, 1, "CUDA out of memory", "w-1") is True
    assert store.record_failure(exp, 2, "worker lost", None) is True
    [summary] = store.list_campaigns()
    assert (summary.measurements_ok, summary.measurements_failed) == (1, 2)
    [e] = store.campaign_detail(campaign_id).experiments
    assert (e.cycles_ok, e.cycles_failed) == (1, 2)
    assert e.failure_reasons == ["CUDA out of memory", "worker lost"]
    failed = rows(
        db,
        "SELECT status, failure_reason, output_tokens_per_s, energy_j, payload_json"
        " FROM measurements WHERE cycle = 1",
    )
    assert failed == [("failed", "CUDA out of memory", None, None, None)]
    record = store.experiment_measurements(exp)[1]
    assert (record.status, record.failure_reason, record.measurement) == (
        "failed",
        "CUDA out of memory",
        None,
    )


def test_environment_deduplicated(store: Store, db: Path) -> None:
    _, exp = make_campaign(store)
    store.record_measurement(measurement(exp, 0))
    store.record_measurement(measurement(exp, 1))
    assert rows(db, "SELECT COUNT(*) FROM environments") == [(1,)]
    store.record_measurement(measurement(exp, 2, env=environment("host-b")))
    assert rows(db, "SELECT COUNT(*) FROM environments") == [(2,)]
    assert rows(db, "SELECT COUNT(DISTINCT environment_id) FROM measurements") == [(2,)]
    names, uuids, limits = rows(
        db, "SELECT gpu_names, gpu_uuids, power_limits_w FROM environments LIMIT 1"
    )[0]
    assert (names, uuids, limits) == ('["H100"]', '["GPU-0"]', "[700.0]")


def test_unknown_ids(store: Store) -> None:
    with pytest.raises(StoreError, match="no campaign with id"):
        store.campaign_detail("c-nope")
    with pytest.raises(StoreError, match="no campaign with id"):
        store.finish_campaign("c-nope", "finished")
    with pytest.raises(StoreError, match="no experiment with id"):
        store.record_measurement(measurement("e-nope"))
    with pytest.raises(StoreError, match="no experiment with id"):
        store.record_failure("e-nope", 0, "x", None)
    with pytest.raises(StoreError, match="no experiment with id"):
        store.experiment_measurements("e-nope")


def test_finish_campaign(store: Store) -> None:
    campaign_id = make_campaign(store)[0]
    with pytest.raises(StoreError, match="final campaign status"):
        store.finish_campaign(campaign_id, "running")
    store.finish_campaign(campaign_id, "interrupted")
    [summary] = store.list_campaigns()
    assert summary.status == "interrupted" and summary.finished_at_unix_s is not None


def test_two_stores_on_one_file(db: Path) -> None:
    with Store(db) as writer, Store(db) as reader:
        campaign_id, exp = make_campaign(writer)
        assert [c.id for c in reader.list_campaigns()] == [campaign_id]
        writer.record_measurement(measurement(exp, 0))
        assert reader.list_campaigns()[0].measurements_ok == 1
        # The reader may write too (e.g. marking a stale campaign interrupted).
        reader.finish_campaign(campaign_id, "interrupted")
        writer.record_measurement(measurement(exp, 1))
        [summary] = writer.list_campaigns()
        assert (summary.status, summary.measurements_ok) == ("interrupted", 2)


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        campaign_id = store.create_campaign("old", None, None, 1, [])
    conn = sqlite3.connect(db)
    columns = ("energy_counter_period_s", "energy_bound_j", "flags_json", "repetitions")
    net = ("net_energy_j", "net_energy_per_output_token_j", "net_energy_unavailable_reason")
    for column in (*columns, "min_window_s", *net):
        conn.execute(f"ALTER TABLE measurements DROP COLUMN {column}")
    for column in ("idle_power_w", "net_energy_j"):
        conn.execute(f"ALTER TABLE gpu_energy DROP COLUMN {column}")
    latency = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "goodput_share")
    for column in ("workload_mode", *latency):  # version 3's
        conn.execute(f"ALTER TABLE measurements DROP COLUMN {column}")
    conn.execute("DROP TABLE request_latencies")
    drop_version_4(conn)
    conn.execute("UPDATE schema_meta SET schema_version = 1")
    conn.commit()
    conn.close()
    exp = new_id("e")
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == 6
        assert store.list_campaigns()[0].id == campaign_id
        other = store.create_campaign("new", None, None, 1, [(exp, ExperimentConfig(), "k")])
        flagged = replace_fields(measurement(exp), energy_bound_j=1.0, flags=["short_window"])
        assert store.record_measurement(flagged)
        [summary] = store.campaign_detail(other).experiments
    assert summary.flags == ["short_window"]
    assert summary.max_energy_relative_bound == pytest.approx(1.0 / 50.0)


def test_prompt_set_hash_and_source_are_stored_and_old_payloads_decode(store: Store) -> None:
    _, exp_a, exp_b = make_campaign(store, ExperimentConfig(), ExperimentConfig(batch_size=2))
    with_prompts = replace_fields(
        measurement(exp_a), prompt_set_hash="ab" * 32, prompt_source="sharegpt x.json"
    )
    assert store.record_measurement(with_prompts)
    [record] = store.experiment_measurements(exp_a)
    assert record.measurement is not None
    assert record.measurement.work.prompt_set_hash == "ab" * 32
    assert record.measurement.work.prompt_source == "sharegpt x.json"
    # A payload written before these fields existed decodes with both None.
    old = msgspec.to_builtins(measurement(exp_b))
    del old["work"]["prompt_set_hash"], old["work"]["prompt_source"]
    decoded = decode_measurement(msgspec.json.encode(old))
    assert decoded.work.prompt_set_hash is None and decoded.work.prompt_source is None
