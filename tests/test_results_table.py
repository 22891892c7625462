"""Flat result tables (results_table.py): columns, nulls, statistics, campaign ids."""

from __future__ import annotations

import os
import re
import shutil
import statistics
from pathlib import Path

import pytest

from lem.coordinator.results.columns import (
    EXPERIMENT_COLUMNS,
    KINDS,
    MEASUREMENT_COLUMNS,
)
from lem.coordinator.results.stats import ci95_half_width
from lem.coordinator.results.table import COLUMNS, experiment_rows, measurement_rows
from lem.coordinator.store.results_store import Store, StoreError
from tests.synthetic_results import add_campaign, config
from tests.test_store import NO_NVML

REPO = Path(__file__).resolve().parent.parent
# A real store from two H100 campaigns (docs/measurements.md); LEM_H100_STORE points elsewhere.
H100_STORE = Path(
    os.environ.get("LEM_H100_STORE", REPO / "docs" / "data" / "h100-parallel-check.db")
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "lem.db"
    with Store(path) as store:
        add_campaign(
            store,
            "demo",
            [config(1), config(4)],
            [[0.5, 0.6, 0.7], [None, None]],
            failed_cycles=[(1, 2)],
        )
    return path


def test_rows_have_exactly_the_documented_columns_in_order(db: Path) -> None:
    rows = measurement_rows(db)
    assert [list(r) for r in rows] == [list(COLUMNS)] * 6
    experiments = experiment_rows(db)
    assert [list(r) for r in experiments] == [list(EXPERIMENT_COLUMNS)] * 2
    for name in [*MEASUREMENT_COLUMNS, *EXPERIMENT_COLUMNS]:
        assert re.fullmatch(r"[a-z0-9_.]+", name), name


def test_every_column_is_in_docs_with_its_type_and_description() -> None:
    docs = (REPO / "docs" / "results.md").read_text()
    cells = [line.split("|") for line in docs.splitlines() if line.startswith("| `")]
    kinds = {"str", "int", "float", "bool"}  # the column tables' rows (not the metric table)
    rows = {c[1].strip(): "|".join(c) for c in cells if c[2].strip() in kinds}
    for name, what in {**MEASUREMENT_COLUMNS, **EXPERIMENT_COLUMNS}.items():
        if name.startswith("config."):
            continue
        assert f"`{name}`" in docs, f"{name} is not documented in docs/results.md"
        if f"`{name}`" in rows:  # a table row: type and description as in results_columns
            assert rows[f"`{name}`"] == f"| `{name}` | {KINDS[name]} | {what} |", name


def test_descriptions_carry_the_unit_of_a_quantity() -> None:
    units = {"_j": "J", "_s": "s", "_ms": "ms", "_w": "W", "_mib": "MiB", "_g": "g"}
    for name, what in {**MEASUREMENT_COLUMNS, **EXPERIMENT_COLUMNS}.items():
        if name.startswith("config.") or KINDS[name] != "float":
            continue
        for suffix, unit in units.items():
            if name.endswith(suffix) and not name.endswith("_unix_s"):
                assert re.search(rf"\b{re.escape(unit)}\b", what), (name, what)


def test_ok_failed_and_unmeasured_cycles(db: Path) -> None:
    rows = measurement_rows(db)
    first = rows[0]
    assert first["status"] == "ok" and first["cycle"] == 0 and first["attempts"] == 1
    assert first["energy_per_output_token_j"] == pytest.approx(0.5)
    assert (
        first["energy_j"] == pytest.approx(128.0)
        and first["energy_method"] == "nvml_energy_counter"
    )
    assert first["ttft_p50_ms"] == 10.0 and first["ttft_p99_ms"] == 20.0
    assert first["itl_p50_ms"] is None  # not recorded: null, never 0
    assert first["flags"] == "short_window"
    assert first["gpu_names"] == "H100" and first["gpu_uuids"] == "GPU-0"
    assert first["gpu_power_limits_w"] == "700" and first["driver_version"] == "550.54"
    assert first["packages"] == "torch=2.4.0" and first["lem_version"] == "0.1.0"
    assert first["config.batch_size"] == 1 and first["config.model.name"] == "llama-3.2-1b"
    assert first["model"] == "llama-3.2-1b" and first["dtype"] == "bfloat16"
    no_energy = rows[3]
    assert no_energy["status"] == "ok" and no_energy["experiment_position"] == 1
    assert no_energy["energy_j"] is None and no_energy["energy_per_output_token_j"] is None
    assert no_energy["energy_unavailable_reason"] == NO_NVML
    failed = rows[5]
    assert failed["status"] == "failed" and failed["cycle"] == 2 and failed["attempts"] == 2
    assert failed["failure_reason"] == "worker died (exit 137)"
    assert failed["energy_j"] is None and failed["duration_s"] is None
    assert failed["flags"] is None and failed["gpu_count"] is None
    assert failed["config.batch_size"] == 4  # the experiment's config is known anyway


def test_experiment_statistics(db: Path) -> None:
    with_energy, without = experiment_rows(db)
    values = [0.5, 0.6, 0.7]
    half = ci95_half_width(values)
    assert half is not None
    assert with_energy["cycles_ok"] == 3 and with_energy["cycles_failed"] == 0
    assert with_energy["energy_per_output_token_j_n"] == 3
    assert with_energy["energy_per_output_token_j_mean"] == pytest.approx(0.6)
    assert with_energy["energy_per_output_token_j_std"] == pytest.approx(statistics.stdev(values))
    assert with_energy["energy_per_output_token_j_ci95_low"] == pytest.approx(0.6 - half)
    assert with_energy["energy_per_output_token_j_ci95_high"] == pytest.approx(0.6 + half)
    assert with_energy["energy_per_output_token_cv"] == pytest.approx(0.1 / 0.6)
    assert with_energy["output_tokens_per_s_mean"] == pytest.approx(100.0)
    assert with_energy["output_tokens_per_s_cv"] == 0.0
    assert with_energy["flags"] == "short_window"
    assert without["cycles_ok"] == 2 and without["cycles_failed"] == 1
    assert without["failure_reasons"] == "worker died (exit 137)"
    assert without["energy_per_output_token_j_n"] == 0
    assert without["energy_per_output_token_j_mean"] is None  # null, never 0
    assert without["energy_per_output_token_j_ci95_low"] is None


def test_experiment_statistics_agree_with_results_show(db: Path) -> None:
    with Store(db) as store:
        [campaign] = store.list_campaigns()
        shown = store.campaign_detail(campaign.id).experiments[0]
    row = experiment_rows(db)[0]
    assert row["energy_per_output_token_j_mean"] == shown.mean_energy_per_output_token_j
    assert row["energy_per_output_token_j_median"] == shown.median_energy_per_output_token_j
    assert row["energy_per_output_token_cv"] == shown.cv_energy_per_output_token
    ci = shown.ci95_energy_per_output_token_j
    assert ci is not None
    assert row["energy_per_output_token_j_ci95_high"] == pytest.approx(
        row["energy_per_output_token_j_mean"] + ci
    )


def test_campaign_ids_and_prefixes(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        first, _ = add_campaign(store, "one", [config(1)], [[0.5]])
        second, _ = add_campaign(store, "two", [config(1)], [[0.4, 0.5]])
    assert {r["campaign_id"] for r in measurement_rows(db)} == {first, second}
    assert [r["campaign_id"] for r in measurement_rows(db, [second])] == [second, second]
    assert [r["campaign_name"] for r in experiment_rows(db, [second[:-1], first])] == ["two", "one"]
    with pytest.raises(StoreError, match="no campaign with id or id prefix 'c-nope'"):
        measurement_rows(db, ["c-nope"])
    with pytest.raises(StoreError, match="ambiguous"):
        measurement_rows(db, ["c-"])


def test_an_ambiguous_prefix_lists_its_first_campaigns_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        ids = [add_campaign(store, f"c{i}", [config(1)], [[0.5]])[0] for i in range(12)]
        with pytest.raises(StoreError, match="ambiguous") as raised:
            store.campaign_detail("c-")
    message = str(raised.value)
    assert "12 campaign ids" in message and message.endswith(" and 2 more")
    assert sum(campaign_id in message for campaign_id in ids) == 10


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no result store here"):
        measurement_rows(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_the_stored_h100_campaigns(tmp_path: Path) -> None:
    if not H100_STORE.is_file():
        pytest.skip(f"no H100 store at {H100_STORE} (set LEM_H100_STORE)")
    db = tmp_path / "h100.db"
    shutil.copy(H100_STORE, db)
    rows = measurement_rows(db)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    first = rows[0]
    assert first["energy_j"] == 3142.595 and first["gpu_names"] == "NVIDIA H100 80GB HBM3"
    assert first["energy_per_output_token_j"] == pytest.approx(3142.595 / 12288)
    assert first["net_energy_per_output_token_j"] == pytest.approx(1631.9707527784267 / 12288)
    assert first["cpu_energy_j"] is None and first["cpu_energy_unavailable_reason"]
    assert first["driver_version"] == "580.159.04" and first["schema_version"] == 6
    assert first["config.batch_size"] == 8 and first["config.model.dtype"] == "bfloat16"
    experiments = experiment_rows(db)
    assert [e["config.batch_size"] for e in experiments] == [8, 32, 8, 32]
    assert all(e["cycles_ok"] == 2 and e["energy_per_output_token_j_n"] == 2 for e in experiments)
