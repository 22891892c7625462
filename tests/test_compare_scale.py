"""``lem compare`` at campaign scale (issue 16): the fast path (flat columns, hash join)
compares exactly as the old one did."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.coordinator.results.compare import compare_campaigns
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
