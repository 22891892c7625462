"""``lem compare`` at campaign scale (issue 16): the fast path (flat columns, hash join)
compares exactly as the old one did, and a large comparison prints its significant rows
first, each note once with its count, and the unmatched experiments counted."""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from benchmarks.results_scale import build_store
from lem.coordinator.cli.compare_output import SHOWN_ROWS
from lem.coordinator.cli.main import main
from lem.coordinator.results.compare import METRICS, compare_campaigns
from lem.coordinator.results.significance import welch_t_test
from lem.coordinator.store.results_store import Store, new_id
from lem.protocol.config import load_key
from lem.protocol.result_payload import replace_fields
from lem.protocol.results import EngineLock
from tests import compare_reference
from tests.synthetic_results import add_campaign, config
from tests.test_store import measurement

ROOT = Path(__file__).resolve().parents[1]
LOCK = EngineLock(name="pytorch-cpu", sha256="a" * 64, made_from=True, matches=True)
OTHER_LOCK = EngineLock(name="pytorch-cpu", sha256="b" * 64, made_from=True, matches=True)
DRIFTED = EngineLock(name="pytorch-cpu", sha256="a" * 64, matches=False, difference_count=1)
NO_TIMING = "token timing off"


def add_untimed_campaign(store: Store, name: str) -> str:
    """Two experiments whose cycles have no TTFT, with the reason stored in the payload."""
    configs = [config(1), config(2)]
    experiments = [(new_id("e"), cfg, load_key(cfg)) for cfg in configs]
    campaign_id = store.create_campaign(name, f"{name}.yaml", "hash", 2, experiments)
    for experiment_id, _, _ in experiments:
        for cycle in range(2):
            m = measurement(experiment_id, cycle, energy_j=50.0 + cycle)
            store.record_measurement(replace_fields(m, latency_unavailable_reason=NO_TIMING))
    return campaign_id


@pytest.fixture
def mixed_store(tmp_path: Path) -> tuple[Path, list[str]]:
    """Campaigns with a bit of everything: duplicate keys, unmatched experiments, null
    energy on one side or both, a single cycle, failed cycles, different and drifted
    engine locks, no lock, latency missing with its reason."""
    db = tmp_path / "mixed.db"
    with Store(db) as store:
        a, _ = add_campaign(
            store, "a",
            [config(1), config(2), config(4), config(1, "again"), config(8), config(16),
             config(64)],
            [[0.5, 0.51, 0.49], [None, None], [0.3, 0.31], [0.5, 0.52], [0.2], [0.1, 0.1],
             [0.05, 0.06]],
            failed_cycles=[(4, 1), (0, 3)], engine_lock=LOCK,
        )  # fmt: skip
        b, _ = add_campaign(
            store, "b",
            [config(64, "x"), config(1, "one"), config(1, "one-again"), config(2), config(4),
             config(8), config(32)],
            [[0.06, 0.05], [0.45, 0.46, 0.44], [0.5, 0.5], [0.4, 0.4], [None, 0.3],
             [0.21, 0.22], [0.1, 0.1]],
            tok_per_s=120.0, engine_lock=OTHER_LOCK,
        )  # fmt: skip
        c, _ = add_campaign(
            store, "c", [config(1), config(2), config(4)], [[0.5, 0.5], [0.2, 0.3], [None, None]]
        )  # no lock recorded
        d, _ = add_campaign(
            store, "d", [config(1), config(4)], [[0.55, 0.5], [0.3, 0.3]], engine_lock=DRIFTED
        )
        e = add_untimed_campaign(store, "e")
    return db, [a, b, c, d, e]


def campaign_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM campaigns ORDER BY id")]
    finally:
        conn.close()


def stores(tmp_path: Path, mixed: Path) -> Iterator[tuple[Path, list[str]]]:
    """The mixed store, the golden store of today's lem and a schema-4 store (flat payloads,
    read through an in-memory upgrade), each a copy."""
    yield mixed, campaign_ids(mixed)
    for source in (ROOT / "tests/golden/store-main.db", ROOT / "tests/data/store-v4/lem.db"):
        copy = tmp_path / source.parent.name / source.name
        copy.parent.mkdir()
        shutil.copyfile(source, copy)
        yield copy, campaign_ids(copy)


def test_the_fast_path_compares_exactly_as_the_old_one(
    tmp_path: Path, mixed_store: tuple[Path, list[str]]
) -> None:
    """Every ordered pair of campaigns (itself included) of three stores: the same pairs,
    unmatched experiments, means, t, df, p, verdicts, lock notes and not-compared metrics
    as the old implementation (tests/compare_reference.py), to the bit."""
    compared = 0
    for db, ids in stores(tmp_path, mixed_store[0]):
        for a in ids:
            for b in ids:
                fast = compare_campaigns(db, a, b)
                assert fast == compare_reference.compare_campaigns(db, a, b), (db.name, a, b)
                compared += len(fast.pairs)
        ignoring = compare_campaigns(db, ids[0], ids[-1], ignore=["batch_size"], alpha=0.2)
        assert ignoring == compare_reference.compare_campaigns(
            db, ids[0], ids[-1], ignore=["batch_size"], alpha=0.2
        )
    assert compared > 50  # the comparisons had pairs to compare
    a, b, _, _, e = mixed_store[1]
    mixed = compare_campaigns(mixed_store[0], a, b)  # what the mixed store exercises
    assert len(mixed.pairs) == 6 and [r.position for r in mixed.only_a] == [5]
    assert {p.lock_mismatch for p in mixed.pairs} == {
        f"different engine locks: A pytorch-cpu@{'a' * 12}; B pytorch-cpu@{'b' * 12}"
    }
    verdicts = {m.verdict.split(" (")[0] for p in mixed.pairs for m in p.metrics}
    assert verdicts == {"significant", "no significant difference", "too few cycles"}
    untimed = compare_campaigns(mixed_store[0], e, e).pairs[0].not_compared
    assert [(n.metric, n.reason_a) for n in untimed if n.metric == "ttft_p50_ms"] == [
        ("ttft_p50_ms", NO_TIMING)
    ]


# ---- at scale: benchmarks/results_scale.py's stores, built from a fixture's campaign ------

A_SIZE, B_SIZE = 300, 280  # B lacks A's last 20 experiments
CHANGED_LOCK = 10  # B experiments i % 10 == 0 ran under another lock
NO_ENERGY = 25  # B experiments i % 25 == 1 have no energy
NVML = "NVML could not start"
WITHOUT_ENERGY = [i for i in range(B_SIZE) if i % NO_ENERGY == 1]
TESTED = B_SIZE * 3 - len(WITHOUT_ENERGY)  # J/token, tokens/s, TTFT a pair (net, ITL: null)


@pytest.fixture(scope="module")
def scale_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A (300 experiments × 2 cycles) and B (280, in another store; +8% J/token on one
    experiment in seven, other scatter), copied from a one-experiment source campaign.
    B is then changed: a tenth of its experiments ran under another engine lock, and a
    twenty-fifth has no energy (with a reason)."""
    folder = tmp_path_factory.mktemp("scale")
    source = folder / "source.db"
    with Store(source) as store:
        add_campaign(store, "source", [config(1)], [[0.5, 0.5]], engine_lock=LOCK)
    store_a, store_b = folder / "a.db", folder / "b.db"
    build_store(store_a, source, A_SIZE)
    build_store(store_b, source, B_SIZE)
    conn = sqlite3.connect(store_b)
    env = {"engine_lock": msgspec.to_builtins(OTHER_LOCK), "gpus": []}
    conn.execute(
        "INSERT INTO environments (id, env_hash, hostname, backend, python_version,"
        " lem_version, gpu_names, gpu_uuids, power_limits_w, payload_json)"
        " VALUES (99, 'other', 'h', 'pytorch', '3', '0', '[]', '[]', '[]', ?)",
        (json.dumps(env),),
    )
    in_b = "(SELECT id FROM experiments WHERE campaign_id = 'c-scale280-b' AND position % {} = {})"
    conn.execute(  # the store keeps the environment twice: its row and the payload's
        "UPDATE measurements SET environment_id = 99, payload_json = json_set(payload_json,"
        " '$.environment.engine_lock', json(?)) WHERE experiment_id IN "
        + in_b.format(CHANGED_LOCK, 0),
        (json.dumps(env["engine_lock"]),),
    )
    conn.execute(
        "UPDATE measurements SET energy_per_output_token_j = NULL, energy_unavailable_reason = ?,"
        " payload_json = json_set(payload_json, '$.energy.energy_per_output_token_j', NULL,"
        " '$.energy.energy_unavailable_reason', ?) WHERE experiment_id IN "
        + in_b.format(NO_ENERGY, 1),
        (NVML, NVML),
    )
    conn.commit()
    conn.close()
    return store_a, store_b


def flat_values(db: Path, campaign: str) -> dict[int, dict[str, list[float]]]:
    """Position → metric → the ok cycles' values, read straight from the store."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    found: dict[int, dict[str, list[float]]] = {}
    query = (
        f"SELECT e.position, {', '.join(f'm.{c}' for c in METRICS)} FROM measurements m"
        " JOIN experiments e ON e.id = m.experiment_id WHERE e.campaign_id = ?"
        " AND m.status = 'ok' ORDER BY e.position, m.cycle"
    )
    for position, *values in conn.execute(query, (campaign,)):
        per_metric = found.setdefault(position, {m: [] for m in METRICS})
        for metric, value in zip(METRICS, values, strict=True):
            if value is not None:
                per_metric[metric].append(value)
    conn.close()
    return found


def expected_significant(a: Path, b: Path) -> list[tuple[int, str, str]]:
    """(position, metric label, p as printed) of every significant pair × metric, most
    significant first: Welch's test on the values read from the stores directly."""
    side_a, side_b = flat_values(a, "c-scale300-a"), flat_values(b, "c-scale280-b")
    rows = []
    for position in sorted(side_b):
        for metric, label in METRICS.items():
            va, vb = side_a[position][metric], side_b[position][metric]
            if len(va) < 2 or len(vb) < 2:
                continue
            p = welch_t_test(va, vb).p
            if p < 0.05:
                mean_a = statistics.fmean(va)
                change = abs((statistics.fmean(vb) - mean_a) / mean_a)
                rows.append((p, -change, position, label))
    return [(position, label, f"{p:.2g}") for p, _, position, label in sorted(rows)]


def lem_compare(*args: str) -> str:
    done = CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.stdout


def table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def test_a_large_comparison_prints_significant_rows_first_and_groups_its_notes(
    scale_stores: tuple[Path, Path],
) -> None:
    a, b = scale_stores
    shown = lem_compare("c-scale300-a", "c-scale280-b", "--store", str(a), "--store-b", str(b))
    lines = shown.splitlines()
    expected = expected_significant(a, b)
    assert 0 < len(expected) <= SHOWN_ROWS  # all of them shown, in this order
    rows = table_rows(shown)
    assert [(int(r[0]), r[3], r[9]) for r in rows] == expected
    assert all(r[0] == r[1] and r[10].startswith("significant (p=") for r in rows)
    energy = {position for position, label, _ in expected if label == "J/token"}
    assert energy and all(position % 7 == 3 for position in energy)  # only the shifted ones
    assert f"All {len(expected)} significant row(s), most significant first" in shown
    assert (
        f"{TESTED - len(expected):,} of {TESTED:,} tested pair × metric row(s) show no "
        f"significant difference ({B_SIZE} matched pairs)."
    ) in lines
    changed = [i for i in range(B_SIZE) if i % CHANGED_LOCK == 0]
    assert [line for line in lines if line.startswith("Engine environments differ")] == [
        f"Engine environments differ for {len(changed)} pairs (e.g. A#0 / B#0, A#10 / B#10, "
        f"A#20 / B#20): different engine locks: A pytorch-cpu@{'a' * 12}; "
        f"B pytorch-cpu@{'b' * 12}"
    ]
    assert (
        f"J/token not compared for {len(WITHOUT_ENERGY)} pairs (e.g. A#1 / B#1, A#26 / B#26, "
        f"A#51 / B#51): null in every ok cycle of B (B: {NVML})"
    ) in lines
    assert (
        f"net J/token, ITL p50 ms not compared for every pair ({B_SIZE}): null in every ok "
        "cycle of A and B (both: no reason stored)"
    ) in lines
    assert (
        "Only in A (no matching experiment): 20 experiments: #280 bs=1,in=128,out=192,seed=1, "
        "#281 bs=2,in=128,out=192,seed=1,"
    ) in " ".join(lines)
    assert "#289 bs=2,in=256,out=192,seed=1 and 10 more" in " ".join(lines)


def test_a_large_comparison_in_full_and_as_json(scale_stores: tuple[Path, Path]) -> None:
    a, b = scale_stores
    stores = ["--store", str(a), "--store-b", str(b)]
    full = lem_compare("c-scale300-a", "c-scale280-b", *stores, "--all")
    rows = table_rows(full)
    assert len(rows) == TESTED
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)  # plan order
    assert "Engine environments differ for A#0 / B#0: different engine locks" in full
    unmatched = " ".join(full.split()).partition("Only in A (no matching experiment): ")[2]
    assert unmatched.count("#") == A_SIZE - B_SIZE  # every one named
    assert unmatched.endswith("#298 bs=4,in=384,out=192,seed=1, #299 bs=8,in=384,out=192,seed=1")
    as_json = json.loads(lem_compare("c-scale300-a", "c-scale280-b", *stores, "--json"))
    assert len(as_json["pairs"]) == B_SIZE and len(as_json["only_a"]) == A_SIZE - B_SIZE
    assert sum(len(p["metrics"]) for p in as_json["pairs"]) == TESTED
    verdicts = {
        (p["a"]["position"], m["metric"]): m["significant"]
        for p in as_json["pairs"]
        for m in p["metrics"]
    }
    old = compare_reference.compare_campaigns(a, "c-scale300-a", "c-scale280-b", store_b=b)
    assert verdicts == {
        (p.a.position, m.metric): m.significant for p in old.pairs for m in p.metrics
    }


def test_a_key_read_through_the_typed_view_is_the_key_read_field_by_field() -> None:
    """The matching key the fast way (a typed msgspec view) and the plain way (JSON decoded,
    each ``config.*`` field looked up and coerced) agree on configs as stored and on
    configs the view does not take as they are."""
    from lem.coordinator.results.columns import CONFIG_KINDS
    from lem.coordinator.results.compare_keys import KeyReader

    stored: dict[str, Any] = json.loads(msgspec.json.encode(config(8, "eight"), order="sorted"))
    variants: list[dict[str, Any]] = [
        stored,
        {**stored, "batch_size": 8.0},  # a float where the column is int
        {**stored, "batch_size": True},  # a bool: 1
        {**stored, "timeout_s": int(stored["timeout_s"])},  # an int where it is float
        {**stored, "greedy": int(stored["greedy"])},
        {**stored, "backend": 3},  # a number where it is text
        {**stored, "cooldown": None},  # a section null, or missing
        {k: v for k, v in stored.items() if k != "cooldown"},
        {**stored, "prompts": "nope"},
        {**stored, "workload": {**stored["workload"], "arrival": {"b": 1, "a": [1, 2]}}},
        {**stored, "unknown": {"x": 1}, "model": {**stored["model"], "unknown": 2}},
        {k: v for k, v in stored.items() if k not in ("model", "seed")},  # an older config
    ]
    everything = KeyReader([leaf for leaf in CONFIG_KINDS if leaf != "name"])
    few = KeyReader(["batch_size"])
    keys = []
    for variant in variants:
        text = json.dumps(variant)
        for reader in (everything, few):
            assert reader.key(text) == reader.plain_key(text), variant
        keys.append(everything.key(text))
    assert [k == keys[0] for k in keys] == [
        True, True, False, True, True, False, False, False, False, False, True, False,
    ]  # fmt: skip
