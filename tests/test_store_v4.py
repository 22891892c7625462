"""Stores and journals written by lem before ``Measurement`` had sub-records (main 13730d2:
store schema 4, protocol 2, flat payloads; tests/data/store-v4, made by
tests/data/make_v4_store.py at that commit) read as that lem read them: every payload maps
one-to-one into the sub-records, reading rewrites none, and ``lem results``, ``lem compare``
and ``lem report`` print what that lem printed — from the old store as it is, and from the
same results recorded again, nested, by this lem."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from lem.coordinator.cli.main import main
from lem.coordinator.execution.shard_merge import merge_shards
from lem.coordinator.report.page import write_report
from lem.coordinator.results.columns import MEASUREMENT_COLUMNS
from lem.coordinator.store.results_store import Store
from lem.protocol.journal import read_journal
from lem.protocol.result_payload import (
    FLAT_FIELDS,
    decode_measurement,
    flat_payload,
    is_flat,
)
from lem.protocol.results import Measurement, Steady

V4 = Path(__file__).parent / "data" / "store-v4"
# Flat fields added to Measurement since, and what a payload without them decodes to.
ADDED_SINCE_V4: dict[str, Any] = {"resolved_dtype": None}  # Preparation's (issue 15)
ADDED_SINCE_V4 |= dict.fromkeys(Steady.__struct_fields__)  # the steady sub-record (issue 17)
LOAD_ENERGY = dict.fromkeys(("load_energy_j", "load_energy_unavailable_reason"))  # issue 17
ADDED_SINCE_V4 |= LOAD_ENERGY  # Preparation's
EXPECTED = V4 / "expected"
CAMPAIGNS = (EXPECTED / "campaigns.txt").read_text().split()
COMMANDS = {
    "list.txt": ["results", "list"],
    **{f"show-{i}.txt": ["results", "show", c] for i, c in enumerate(CAMPAIGNS)},
    "compare.json": ["compare", CAMPAIGNS[3], CAMPAIGNS[4], "--json"],
    **{
        f"export-{level}.json": ["results", "export", "--level", level, "--format", "json"]
        for level in ("measurement", "experiment")
    },
}


def stored_payloads(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        query = "SELECT payload_json FROM measurements WHERE payload_json IS NOT NULL ORDER BY id"
        return [str(r[0]) for r in conn.execute(query)]
    finally:
        conn.close()


def journal_lines() -> list[bytes]:
    return [line for path in sorted((V4 / "journals").glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]  # fmt: skip


def lem_prints(db: Path, name: str) -> str:
    done = CliRunner().invoke(
        main, [*COMMANDS[name], "--store", str(db)], env={"COLUMNS": "200"},
        catch_exceptions=False,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return done.stdout


def expected(name: str) -> str:
    """What lem at 13730d2 printed. The changes: the ``schema_version`` column is the
    version of the store as read, and opening the store brings it to 6; compare's pairs
    name the metrics they could not compare (``not_compared``); the export has the
    ``steady_*``, ``load_energy_*``, ``config.openai.*`` and ``config.workload.sweep``
    columns (issue 17), null in that store."""
    text = (EXPECTED / name).read_text()
    # issue 17's openai engine: its config.openai.* columns, null in that store's rows
    openai = dict.fromkeys(c for c in MEASUREMENT_COLUMNS if c.startswith("config.openai."))
    openai["config.workload.sweep"] = None  # issue 17's load sweeps: none in that store
    # issue 19's GPU settings: not in that store's configs
    openai |= dict.fromkeys(c for c in MEASUREMENT_COLUMNS if c.startswith("config.gpu."))
    if name == "export-measurement.json":
        rows = json.loads(text)
        assert {r["schema_version"] for r in rows} == {4}
        steady = dict.fromkeys(Steady.__struct_fields__)  # issue 17's columns: null there
        text = json.dumps(
            [{**r, "schema_version": 6, **steady, **LOAD_ENERGY, **openai} for r in rows]
        )
    if name == "export-experiment.json":
        text = json.dumps([{**r, **openai} for r in json.loads(text)])
    if name == "compare.json":  # issue 15: metrics null in every ok cycle are now named
        compared = json.loads(text)
        for pair in compared["pairs"]:
            pair["not_compared"] = [not_compared(m) for m in OLD_LEM_DID_NOT_MEASURE]
        text = json.dumps(compared)
    return text


# That lem stored no net energy and no ITL for these campaigns (no idle baseline, no token
# timing), so compare now says they were not compared, on both sides, with no stored reason.
OLD_LEM_DID_NOT_MEASURE = ("net_energy_per_output_token_j", "itl_p50_ms")


def not_compared(metric: str) -> dict[str, object]:
    return {"metric": metric, "null_a": True, "null_b": True, "reason_a": None, "reason_b": None}


def same_output(name: str, got: str, want: str) -> None:
    if name.endswith(".json"):
        assert json.loads(got) == json.loads(want), name
    else:
        assert got == want, name


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the old store (opening one brings it to schema 6: never the fixture)."""
    db = tmp_path / "old" / "lem.db"
    db.parent.mkdir()
    shutil.copy(V4 / "lem.db", db)
    return db


def test_an_old_payload_holds_every_flat_field_and_nothing_else(old_store: Path) -> None:
    payloads = [json.loads(p) for p in stored_payloads(old_store)]
    payloads += [json.loads(line) for line in journal_lines()]
    assert len(payloads) == 34
    for payload in payloads:
        assert is_flat(payload) and set(payload) == set(FLAT_FIELDS) - set(ADDED_SINCE_V4)
    assert len(FLAT_FIELDS) == 73 + len(ADDED_SINCE_V4)  # the flat Measurement's fields


def test_old_payloads_and_journal_lines_map_one_to_one_into_the_sub_records(
    old_store: Path,
) -> None:
    raws = [p.encode() for p in stored_payloads(old_store)] + journal_lines()
    for raw in raws:
        m = decode_measurement(raw)
        assert flat_payload(msgspec.to_builtins(m)) == {**json.loads(raw), **ADDED_SINCE_V4}
    # what the sub-records hold is what the flat payload said (a few by hand)
    [first, *_] = (decode_measurement(r) for r in raws)
    flat = json.loads(raws[0])
    assert first.energy.energy_j == flat["energy_j"] is not None
    assert first.work.output_tokens == flat["output_tokens"]
    assert first.observed.telemetry is not None
    assert first.phases.prefill_repetitions == flat["prefill_repetitions"] > 0
    assert first.store_schema_version == 4


def test_old_journals_read_whole() -> None:
    """A flat line is not taken for a torn one (read_journal skips those silently)."""
    paths = sorted((V4 / "journals").glob("*.jsonl"))
    assert sum(len(read_journal(p)) for p in paths) == len(journal_lines()) == 12


def test_an_old_store_reads_as_that_lem_read_it_and_is_not_rewritten(old_store: Path) -> None:
    before = stored_payloads(old_store)
    for name in COMMANDS:
        same_output(name, lem_prints(old_store, name), expected(name))
    with Store(old_store) as store:
        assert store.schema_version() == 6
        detail = store.campaign_detail(CAMPAIGNS[2])
        [record, *_] = store.experiment_measurements(detail.experiments[0].id)
    assert record.measurement is not None and record.measurement.latency.ttft_ms is not None
    assert stored_payloads(old_store) == before  # reading rewrote no payload


def recorded_again(db: Path) -> None:
    """Every ok result of ``db`` recorded again by this lem (nested payloads), with the
    time it was first recorded; the rest of the store as it was."""
    results: list[tuple[Measurement, int | None, float]] = []
    with Store(db) as store:
        for campaign_id in CAMPAIGNS:
            for e in store.campaign_detail(campaign_id).experiments:
                for r in store.experiment_measurements(e.id):
                    if r.measurement is None:
                        continue
                    requests = store.request_records(e.id, r.cycle)
                    latency = msgspec.structs.replace(r.measurement.latency, requests=requests)
                    m = msgspec.structs.replace(r.measurement, latency=latency)
                    results.append((m, r.attempts, r.recorded_at_unix_s))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("DELETE FROM measurements WHERE status = 'ok'")  # and their rows elsewhere
    conn.commit()
    with Store(db) as store:
        for m, attempts, _ in results:
            assert store.record_measurement(m, attempts)
    for m, _, recorded_at_unix_s in results:
        conn.execute(
            "UPDATE measurements SET recorded_at_unix_s = ? WHERE experiment_id = ? AND cycle = ?",
            (recorded_at_unix_s, m.experiment_id, m.cycle),
        )
    conn.commit()
    conn.close()


def test_the_same_results_recorded_nested_by_this_lem_print_the_same(
    old_store: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again" / "lem.db"
    again.parent.mkdir()
    shutil.copy(old_store, again)
    recorded_again(again)
    payloads = [json.loads(p) for p in stored_payloads(again)]
    assert len(payloads) == 22 and not any(is_flat(p) for p in payloads)
    assert {p["store_schema_version"] for p in payloads} == {6}
    for name in COMMANDS:
        same_output(name, lem_prints(again, name), expected(name))
    for campaign_id in CAMPAIGNS[:3]:  # telemetry, shards, latency
        old_page = report_page(old_store, campaign_id, tmp_path / "old")
        new_page = report_page(again, campaign_id, tmp_path / "again")
        old_page = old_page.replace("Results recorded under schema</th><td>4", "…</th><td>6")
        assert new_page.replace("Results recorded under schema", "…") == old_page


def report_page(db: Path, campaign_id: str, folder: Path) -> str:
    page = write_report(db, campaign_id, folder / campaign_id).read_text()
    page = page.replace(str(db), "STORE")
    return re.sub(r"Report made [^<]* by", "Report made (time) by", page)


def test_old_shards_merge_into_what_that_lem_stored(old_store: Path) -> None:
    """The data-parallel shards in the old workers' journals, merged by the merge rules of
    the sub-records, give the measurement lem at 13730d2 merged and stored from them."""
    shards: dict[tuple[str, int], list[Measurement]] = {}
    for path in sorted((V4 / "journals").glob("*.jsonl")):
        for m in read_journal(path):
            if m.shard_count > 1:
                shards.setdefault((m.experiment_id, m.cycle), []).append(m)
    assert len(shards) == 2
    with Store(old_store) as store:
        for (experiment_id, cycle), parts in shards.items():
            record = store.experiment_measurements(experiment_id)[cycle]
            assert record.measurement is not None and len(record.measurement.shards) == 2
            merged = msgspec.structs.replace(merge_shards(parts), store_schema_version=4)
            assert to_flat(merged) == to_flat(record.measurement)


def to_flat(m: Measurement) -> dict[str, Any]:
    return flat_payload(msgspec.to_builtins(m))
