"""``lem results export`` and ``lem.load_results``: files that read back equal, bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import lem
from lem.coordinator.results import export as results_export
from lem.coordinator.results.columns import EXPERIMENT_COLUMNS
from lem.coordinator.results.export import ExportError, pandas_dtypes, write_export
from lem.coordinator.results.table import COLUMNS, measurement_rows
from lem.coordinator.store.results_store import Store
from tests.synthetic_results import add_campaign, config


def lem_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "lem.db"
    with Store(path) as store:
        add_campaign(
            store,
            "one",
            [config(1), config(4)],
            [[0.5, 0.6, 0.7], [None, 0.2]],
            failed_cycles=[(1, 2)],
        )
        add_campaign(store, "two", [config(8)], [[0.125]])
    return path


def test_load_results_has_the_documented_columns_and_dtypes(db: Path) -> None:
    frame = lem.load_results(db)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 7
    assert {str(t) for t in frame.dtypes} <= {"string", "Int64", "Float64", "boolean"}
    assert str(frame["energy_per_output_token_j"].dtype) == "Float64"
    assert str(frame["cycle"].dtype) == "Int64" and str(frame["model_reused"].dtype) == "boolean"
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert pd.isna(failed["energy_j"]) and pd.isna(failed["model_reused"])
    experiments = lem.load_results(db, level="experiment")
    assert list(experiments.columns) == list(EXPERIMENT_COLUMNS) and len(experiments) == 3
    assert experiments["energy_per_output_token_j_mean"].iloc[0] == pytest.approx(0.6)
    [campaign] = set(lem.load_results(db, measurement_rows(db)[-1]["campaign_id"])["campaign_name"])
    assert campaign == "two"


@pytest.mark.parametrize("level", ["measurement", "experiment"])
def test_parquet_csv_and_json_read_back_equal_to_load_results(
    db: Path, tmp_path: Path, level: str
) -> None:
    expected = lem.load_results(db, level=level)  # type: ignore[arg-type]
    for fmt in ("parquet", "csv", "json"):
        out = tmp_path / f"results.{fmt}"
        done = lem_cli("results", "export", "--store", str(db), "--level", level, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert f"to {out} ({fmt})" in done.stderr
        if fmt == "parquet":
            back = pd.read_parquet(out)
        elif fmt == "csv":
            back = pd.read_csv(out, dtype=pandas_dtypes(level))  # type: ignore[arg-type]
        else:
            records = json.loads(out.read_text())
            assert list(records[0]) == list(expected.columns)
            back = pd.DataFrame.from_records(records, columns=list(expected.columns))
            back = back.astype(pandas_dtypes(level))  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(back, expected, check_exact=True)


def test_stdout_export_and_campaign_prefix(db: Path) -> None:
    two = measurement_rows(db)[-1]["campaign_id"]
    done = lem_cli("results", "export", two[:-2], "--store", str(db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split(",")[:3] == ["campaign_id", "campaign_name", "experiment_id"]
    assert len(lines) == 2 and lines[1].startswith(f"{two},two,")
    as_json = lem_cli("results", "export", two, "--store", str(db), "--format", "json")
    [row] = json.loads(as_json.stdout)
    assert row["energy_per_output_token_j"] == 0.125 and row["itl_p50_ms"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["c-nope"], "no campaign with id or id prefix 'c-nope'"),
        (["c-"], "is ambiguous"),
        (["--format", "xlsx"], "unknown export format 'xlsx'"),
        (["--level", "cycle"], "--level: expected one of measurement, experiment"),
        (["-o", "{tmp}/missing/out.csv"], "does not exist"),
        (["-o", "{tmp}"], "is a folder"),
        (["--format", "parquet"], "Parquet is binary"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    db: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    done = lem_cli("results", "export", "--store", str(db), *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_no_store_exits_2_and_creates_none(tmp_path: Path) -> None:
    done = lem_cli(
        "results", "export", "--store", str(tmp_path / "none.db"), "-o", str(tmp_path / "x.csv")
    )
    assert done.returncode == 2 and "no result store here" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_leaves_the_old_file_whole(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def half_then_fail(rows: object, level: object, out: io.TextIOBase) -> None:
        out.write("campaign_id,half a row")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_export, "_write_csv", half_then_fail)
    with pytest.raises(ExportError, match="No space left on device"):
        write_export(measurement_rows(db), "measurement", "csv", str(target), io.StringIO())
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lem.db", "out.csv"]


def test_missing_pandas_is_one_line_exit_2(db: Path, tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import pandas` fail as if it were not installed.
    code = (
        "import sys; sys.modules['pandas'] = None; sys.argv = ['lem'] + sys.argv[1:];"
        "from lem.coordinator.cli.main import main; main()"
    )
    out = tmp_path / "x.parquet"
    done = subprocess.run(
        [sys.executable, "-c", code, "results", "export", "--store", str(db), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "pip install 'lem[analysis]'" in done.stderr and not out.exists()


def test_importing_lem_imports_neither_pandas_nor_the_coordinator() -> None:
    code = (
        "import sys, lem; assert callable(lem.load_results) and callable(lem.run);"
        "print(sorted(m for m in sys.modules if m == 'pandas' or m.startswith('lem.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
