"""Result tables at campaign scale (issue 16): the fast path (typed decoding, an experiment at
a time, text made per run of columns) gives exactly the rows, files and DataFrames that lem
made row by row (tests/results_reference.py), on stores of every kind: failed cycles, null
energies, flags and locks, old flat payloads (schema 4), the same results nested, and a
campaign of 300 experiments; and the large one exports whole, in order, as stored."""

from __future__ import annotations

import io
import shutil
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lem
from benchmarks.results_scale import build_store
from lem.coordinator.results import formats, generic_row
from lem.coordinator.results.columns import KINDS, LEVELS, SHARED_COLUMNS, Level, coerce
from lem.coordinator.results.experiment_row import EXPERIMENT_INPUTS
from lem.coordinator.results.export import dataframe, write_export
from lem.coordinator.results.table import (
    ResultSet,
    experiment_rows,
    grouped_rows,
    measurement_rows,
)
from lem.coordinator.results.typed_row import MEASURED_COLUMNS, MeasuredReader, shared
from lem.coordinator.store.results_store import Store
from lem.protocol.result_payload import flat_payload
from lem.protocol.results import EngineLock
from tests import results_reference as reference
from tests.synthetic_results import add_campaign, config
from tests.test_store import measurement
from tests.test_store_v4 import V4, recorded_again

LOCK = EngineLock(name="pytorch-cpu", sha256="ab" * 32, matches=False, difference_count=2)


def synthetic(path: Path) -> Path:
    """Failed cycles, a cycle without energy, an experiment without cycles, flags, locks."""
    with Store(path) as store:
        add_campaign(
            store,
            "one",
            [config(1), config(4), config(8, name='eight, "quoted"\nnewline')],
            [[0.5, 0.6, 0.7], [None, 0.2], []],
            failed_cycles=[(1, 2), (0, 3)],
            engine_lock=LOCK,
        )
        add_campaign(store, "two", [config(2)], [[0.125, 1e-5]])
    return path


def source_store(path: Path) -> Path:
    """A store whose first campaign's first experiment has two ok cycles (build_store's
    source)."""
    with Store(path) as store:
        add_campaign(store, "source", [config(1)], [[0.004, 0.0041]])
    return path


SCALE = 300


@pytest.fixture(scope="module")
def scale_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scale")
    path = folder / "scale.db"
    build_store(path, source_store(folder / "source.db"), SCALE)
    return path


@pytest.fixture(params=["synthetic", "v4-flat", "v4-nested", "scale", "empty"])
def store(request: pytest.FixtureRequest, tmp_path: Path, scale_store: Path) -> Path:
    path = tmp_path / "lem.db"
    if request.param == "synthetic":
        return synthetic(path)
    if request.param == "empty":  # a campaign of no experiment yet: no row at all
        with Store(path) as opened:
            opened.create_campaign("empty", "empty.yaml", "hash", 2, [])
        return path
    if request.param == "scale":
        return scale_store
    shutil.copy(V4 / "lem.db", path)  # reading never writes; a copy all the same
    if request.param == "v4-nested":
        recorded_again(path)
    return path


def reference_rows(level: Level, path: Path) -> list[dict[str, Any]]:
    read = reference.measurement_rows if level == "measurement" else reference.experiment_rows
    return read(path)


def typed(rows: list[dict[str, Any]]) -> list[list[tuple[str, Any, type]]]:
    return [[(k, v, type(v)) for k, v in r.items()] for r in rows]


def test_rows_are_the_reference_rows_cell_for_cell(store: Path) -> None:
    assert typed(measurement_rows(store)) == typed(reference_rows("measurement", store))
    assert typed(experiment_rows(store)) == typed(reference_rows("experiment", store))
    groups = grouped_rows(store)
    assert [r for _, rows in groups for r in rows] == reference_rows("measurement", store)
    assert [{n: r[n] for n in SHARED_COLUMNS} for r in reference_rows("experiment", store)] == [
        setup for setup, _ in groups
    ]


@pytest.mark.parametrize("level", LEVELS)
def test_exports_are_the_reference_files_byte_for_byte(
    store: Path, tmp_path: Path, level: Level
) -> None:
    rows = reference_rows(level, store)
    for fmt in ("csv", "json", "parquet"):
        new, old = tmp_path / f"new.{fmt}", tmp_path / f"old.{fmt}"
        with ResultSet(store) as results:
            assert write_export(results, level, fmt, str(new), io.StringIO()) == len(rows)
        write_export(rows, level, fmt, str(old), io.StringIO())
        assert new.read_bytes() == old.read_bytes(), fmt
        if fmt != "parquet":
            shown = io.StringIO()
            with ResultSet(store) as results:
                write_export(results, level, fmt, "-", shown)
            assert shown.getvalue().encode() == old.read_bytes()
    with ResultSet(store) as results:
        frame = dataframe(results, level)
    pd.testing.assert_frame_equal(frame, dataframe(rows, level), check_exact=True)


def test_a_campaign_of_300_experiments_reads_whole_in_order_as_stored(scale_store: Path) -> None:
    a, b = f"c-scale{SCALE}-a", f"c-scale{SCALE}-b"
    frame = lem.load_results(scale_store, a)
    assert len(frame) == 2 * SCALE and set(frame["campaign_id"]) == {a}
    assert list(frame["experiment_position"]) == [i // 2 for i in range(2 * SCALE)]
    assert list(frame["cycle"]) == [0, 1] * SCALE
    conn = sqlite3.connect(scale_store)
    stored = {
        (e, c): (jpt, tps, batch)
        for e, c, jpt, tps, batch in conn.execute(
            "SELECT m.experiment_id, m.cycle,"
            " json_extract(m.payload_json, '$.energy.energy_per_output_token_j'),"
            " json_extract(m.payload_json, '$.work.output_tokens_per_s'),"
            " json_extract(e.config_json, '$.batch_size') FROM measurements m"
            " JOIN experiments e ON e.id = m.experiment_id WHERE e.campaign_id = ?",
            (a,),
        )
    }
    conn.close()
    assert len(stored) == len(frame)
    columns = ["experiment_id", "cycle", "energy_per_output_token_j", "output_tokens_per_s"]
    for row in frame[[*columns, "config.batch_size"]].to_dict("records"):
        assert stored[(row["experiment_id"], row["cycle"])] == (
            row["energy_per_output_token_j"],
            row["output_tokens_per_s"],
            row["config.batch_size"],
        )
    experiments = lem.load_results(scale_store, [a, b], level="experiment")
    assert len(experiments) == 2 * SCALE and set(experiments["cycles_ok"]) == {2}
    first = frame[frame["experiment_position"] == 7]["energy_per_output_token_j"]
    assert experiments["energy_per_output_token_j_mean"].iloc[7] == statistics.fmean(first)
    assert experiments["energy_per_output_token_j_std"].iloc[7] == statistics.stdev(first)
    b_rows = experiments[experiments["campaign_id"] == b]
    shifted = (
        b_rows["energy_per_output_token_j_mean"].to_numpy()
        / experiments[experiments["campaign_id"] == a]["energy_per_output_token_j_mean"].to_numpy()
    )
    assert (shifted[3::7] > 1.07).all() and (shifted[0::7] < 1.05).all()  # B: +8% on 1 in 7


# ---- the parts, on any input ------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def payload_variants() -> st.SearchStrategy[dict[str, Any]]:
    """A stored payload, nested or flat, with some fields replaced by any JSON value or
    removed."""
    base: dict[str, Any] = msgspec.to_builtins(measurement("e-1", 1))
    paths = [(k,) for k in base] + [
        (k, f) for k, v in base.items() if isinstance(v, dict) for f in v
    ]

    @st.composite
    def variant(draw: st.DrawFn) -> dict[str, Any]:
        payload = msgspec.json.decode(msgspec.json.encode(base))
        if draw(st.booleans()):
            payload = flat_payload(payload) if draw(st.booleans()) else payload
        for path in draw(st.lists(st.sampled_from(paths), max_size=4)):
            node = payload
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if draw(st.booleans()):
                    node[path[-1]] = draw(JSON)
                else:
                    node.pop(path[-1], None)
        return payload

    return variant()


def outcome(read: Any) -> Any:
    try:
        return ("values", read())
    except Exception as exc:  # the generic reading's errors, raised by both alike
        return ("error", type(exc))


EXPERIMENT = {
    "campaign_id": "c-1", "campaign_name": "one", "experiment_id": "e-1",
    "experiment_name": "b1", "experiment_position": 0, "schema_version": 6,
    "config_json": msgspec.json.encode(config(1)).decode(),
}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(payload=payload_variants(), sql=st.sampled_from([(1, "ok", None, 1), (2, "ok", "x", 2.0)]))
def test_a_payload_of_any_shape_reads_as_the_generic_reading_reads_it(
    payload: dict[str, Any], sql: tuple[Any, ...]
) -> None:
    raw = msgspec.json.encode(payload)
    m = (*sql, "w-1", 1.5e9, raw)
    fast = outcome(lambda: MeasuredReader(6).measured(EXPERIMENT, m))
    columns = ("cycle", "status", "failure_reason", "attempts", "worker_id", "recorded_at_unix_s")
    row = {**dict(zip(columns, m, strict=False)), "payload_json": raw}
    slow = outcome(
        lambda: tuple(generic_row.measurement_row(EXPERIMENT, row)[n] for n in MEASURED_COLUMNS)
    )
    assert fast == slow
    if fast[0] == "values":
        assert [type(v) for v in fast[1]] == [type(v) for v in slow[1]]
        # the experiment level decodes only what it reads: the same values of those
        narrow = MeasuredReader(6, EXPERIMENT_INPUTS).measured(EXPERIMENT, m)
        assert narrow == tuple(
            v for n, v in zip(MEASURED_COLUMNS, fast[1], strict=True) if n in EXPERIMENT_INPUTS
        )


def config_variants() -> st.SearchStrategy[dict[str, Any]]:
    base: dict[str, Any] = msgspec.to_builtins(config(4))
    paths = [(k,) for k in base] + [
        (k, f) for k, v in base.items() if isinstance(v, dict) for f in v
    ]

    @st.composite
    def variant(draw: st.DrawFn) -> dict[str, Any]:
        tree = msgspec.json.decode(msgspec.json.encode(base))
        for path in draw(st.lists(st.sampled_from(paths), max_size=4)):
            node = tree
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node[path[-1]] = draw(JSON)
        return tree

    return variant()


@settings(max_examples=300, deadline=None)
@given(tree=config_variants())
def test_a_config_of_any_shape_reads_as_the_generic_reading_reads_it(tree: dict[str, Any]) -> None:
    experiment = {**EXPERIMENT, "config_json": msgspec.json.encode(tree).decode()}
    fast = outcome(lambda: shared(experiment))
    found = outcome(lambda: generic_row.setup(experiment))
    slow = found
    if found[0] == "values":
        slow = outcome(lambda: tuple(coerce(KINDS[n], found[1][n]) for n in SHARED_COLUMNS))
    assert fast == slow
    if fast[0] == "values":
        assert [type(v) for v in fast[1]] == [type(v) for v in slow[1]]


FLOATS = st.floats() | st.none()


@settings(max_examples=500, deadline=None)
@given(st.lists(FLOATS, max_size=12))
def test_float_texts_are_what_the_csv_module_writes(values: list[float | None]) -> None:
    assert formats.float_texts(values) == ["" if v is None else repr(v) for v in values]


@pytest.mark.parametrize(
    "value", [1e-4, 9.99e-5, 1e-5, -1e-5, 1e16, 9999999999999998.0, 1e22, 5e-324, -0.0, 0.0]
)
def test_float_texts_at_the_notation_edges(value: float) -> None:
    assert formats.float_texts([value, None, value]) == [repr(value), "", repr(value)]
