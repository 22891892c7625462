"""``lem report`` of a campaign too large to show one by one: 300 experiments copied in SQL
(``benchmarks/results_scale.build_store``) from a real sleep-backend campaign on a replayed
NVML (energy, telemetry). The page must place every experiment in the per-axis plots,
name the Pareto-front, flagged and ``--experiment`` ones, say how many it leaves out and
stay small; every experiment goes to ``experiments.csv``. At or below the threshold
nothing changes (no CSV, no sample). Speed is benchmarks/results_scale.py's business."""

from __future__ import annotations

import base64
import csv
import random
import re
import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.results_scale import build_store
from lem.coordinator.report.rows import ExperimentRow, columns_table, experiment_table, pareto_front
from lem.coordinator.report.sample import MAX_FLAGGED, SAMPLE_ABOVE
from lem.coordinator.report.sweep import ExperimentInfo, swept_axes
from lem.coordinator.results.table import experiment_rows, open_for_reading
from lem.coordinator.store.results_store import Store
from tests.report_stores import gpu_like_campaign, lem_report
from tests.synthetic_results import add_campaign, config

pytest.importorskip("matplotlib", reason="lem report needs the report extra (matplotlib)")
EXPERIMENTS = 300
AXES = ("batch_size", "input_tokens", "output_tokens", "prompts.seed")
FLAGGED = (100, 200, 250)  # positions given a flag (every other flag is cleared)
PAGE_LIMIT_BYTES = 5_000_000
IMG = re.compile(
    r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" title="([^"]*)"'
)


def _only_flag(db: Path, campaign_id: str, positions: tuple[int, ...]) -> None:
    """Clear every cycle's flags, then give both cycles of ``positions`` ``short_window``."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE measurements SET flags_json = '[]',"
            " payload_json = json_set(payload_json, '$.flags', json('[]'))"
        )
        conn.execute(
            "UPDATE measurements SET flags_json = '[\"short_window\"]',"
            " payload_json = json_set(payload_json, '$.flags', json('[\"short_window\"]'))"
            " WHERE experiment_id IN (SELECT id FROM experiments WHERE campaign_id = ? AND"
            f" position IN ({','.join('?' * len(positions))}))",
            (campaign_id, *positions),
        )
    conn.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-experiment campaign (sleep backend, replayed two-GPU NVML)."""
    db, _ = gpu_like_campaign(tmp_path_factory.mktemp("source"))
    return db


@pytest.fixture(scope="module")
def large(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A 300-experiment copy of it, three experiments flagged, and its report folder."""
    folder = tmp_path_factory.mktemp("large")
    db = folder / "scale.db"
    campaign_id, _ = build_store(db, source, EXPERIMENTS)
    _only_flag(db, campaign_id, FLAGGED)
    done = lem_report(campaign_id, "-o", str(folder / "report"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    return db, campaign_id, folder / "report"


def _front(rows: list[dict[str, object]], x: str, maximise: bool) -> set[str]:
    """The Pareto front by its definition, pairwise (no other is as good on both and
    better on one), over experiment_rows' figures."""
    points = [
        (str(r["experiment_id"]), x_v * (1 if maximise else -1), y_v)
        for r in rows
        if isinstance(x_v := r[x], float)
        and isinstance(y_v := r["energy_per_output_token_j_mean"], float)
    ]
    return {
        e for e, xa, ya in points
        if not any(xb >= xa and yb <= ya and (xb > xa or yb < ya) for _, xb, yb in points)
    }  # fmt: skip


def _summary_ids(page: str) -> list[str]:
    """The experiments of the summary table (each links to its config)."""
    summary = page[page.index('<section id="summary">') : page.index('<section id="flags">')]
    return re.findall(r'<a href="#config-([^"]+)">', summary)


@pytest.mark.slow
def test_large_report_shows_fronts_flagged_and_what_it_left_out(
    large: tuple[Path, str, Path],
) -> None:
    db, campaign_id, folder = large
    assert sorted(p.name for p in folder.iterdir()) == ["experiments.csv", "index.html"]
    page = (folder / "index.html").read_text()
    assert (folder / "index.html").stat().st_size < PAGE_LIMIT_BYTES
    rows = experiment_rows(db, [campaign_id])
    ids = {int(str(r["experiment_position"])): str(r["experiment_id"]) for r in rows}
    shown = _summary_ids(page)
    assert 0 < len(shown) < EXPERIMENTS
    # Every experiment on the fronts (this campaign's are shorter than the cap) and every
    # flagged one is in the table and has its config section.
    fronts = _front(rows, "output_tokens_per_s_median", True)
    assert fronts and len(fronts) <= 20
    for experiment_id in fronts | {ids[p] for p in FLAGGED}:
        assert experiment_id in shown, experiment_id
        assert f'<details id="config-{experiment_id}">' in page
    assert f"all {len(fronts)} on the throughput Pareto front" in page
    assert f"all {len(FLAGGED)} flagged" in page
    left_out = EXPERIMENTS - len(shown)
    assert f"{left_out:,} experiments are left out" in page
    assert f"lem report {campaign_id} --experiment NAME_OR_POSITION" in page
    assert f"lem results show {campaign_id} --where" in page
    # Per-axis plots: one per swept axis, each aggregated over the other axes.
    titles = {title: svg for svg, title in IMG.findall(page)}
    for axis in AXES:
        svg = base64.b64decode(titles[f"J/token and throughput against {axis}"]).decode()
        assert ">median<" in svg and ">IQR<" in svg and f">{axis}<" in svg
    # The CSV holds every experiment, and says which ones the page shows and why.
    with (folder / "experiments.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["experiment_id"] for r in table] == [ids[p] for p in sorted(ids)]
    assert {r["experiment_id"] for r in table if r["shown_because"]} == set(shown)
    assert {r["experiment_id"] for r in table if "flagged" in r["shown_because"]} == {
        ids[p] for p in FLAGGED
    }
    assert all(r[axis] != "" for r in table for axis in AXES)


@pytest.mark.slow
def test_named_experiments_are_shown_and_an_unknown_one_is_refused(
    large: tuple[Path, str, Path], tmp_path: Path
) -> None:
    db, campaign_id, folder = large
    with (folder / "experiments.csv").open(newline="") as f:
        left_out = [r for r in csv.DictReader(f) if not r["shown_because"]]
    by_name, by_position = left_out[0], left_out[-1]
    done = lem_report(
        campaign_id, "-o", str(tmp_path / "r"), "--store", str(db),
        "--experiment", by_name["experiment_name"], "--experiment", by_position["position"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    shown = _summary_ids(page)
    for row in (by_name, by_position):
        assert row["experiment_id"] in shown
        assert f'<details id="config-{row["experiment_id"]}">' in page
    assert "2 named with <code>--experiment</code>" in page
    refused = lem_report(
        campaign_id, "-o", str(tmp_path / "x"), "--store", str(db), "--experiment", "nope"
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--experiment 'nope': no experiment of this campaign" in refused.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_flagged_experiments_are_capped(source: Path, tmp_path: Path) -> None:
    db = tmp_path / "scale.db"
    campaign_id, _ = build_store(db, source, SAMPLE_ABOVE + 10)  # every cycle flagged
    done = lem_report(campaign_id, "-o", str(tmp_path / "r"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert f"the first {MAX_FLAGGED} of {SAMPLE_ABOVE + 10} flagged" in page
    assert "more, of 120 in all (60 experiments)" in page  # the flag's marks, capped


@pytest.mark.slow
def test_at_the_threshold_every_experiment_is_shown_and_no_csv(
    source: Path, tmp_path: Path
) -> None:
    db = tmp_path / "scale.db"
    campaign_id, _ = build_store(db, source, SAMPLE_ABOVE)
    done = lem_report(campaign_id, "-o", str(tmp_path / "r"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["index.html"]
    page = (tmp_path / "r" / "index.html").read_text()
    assert len(_summary_ids(page)) == SAMPLE_ABOVE and "left out" not in page
    assert "J/token against batch_size" in page  # the per-experiment lines, as before


def test_columns_table_agrees_with_experiment_table(source: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.db"  # no energy, a failed cycle, one cycle only
    with Store(mixed) as store:
        add_campaign(store, "mixed", [config(1), config(2), config(4)],
                     [[0.5, 0.6, 0.4], [None, None], [0.3]], failed_cycles=[(2, 1)])  # fmt: skip
    golden = Path(__file__).parent / "golden" / "store-main.db"  # schema 5, read upgraded
    for db in (source, mixed, golden):
        conn, _ = open_for_reading(db)
        try:
            for (campaign_id,) in conn.execute("SELECT id FROM campaigns").fetchall():
                fast = columns_table(conn, campaign_id)
                exact = experiment_table(db, campaign_id)
                assert [r.experiment_id for r in fast] == [r.experiment_id for r in exact]
                for a, b in zip(fast, exact, strict=True):
                    for name, value in asdict(b).items():
                        wanted = (
                            pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
                        )
                        assert getattr(a, name) == wanted, (db.name, name)
        finally:
            conn.close()


def _row(position: int, x: float | None, y: float | None) -> ExperimentRow:
    return ExperimentRow(
        experiment_id=f"e{position}", position=position, name=None, cycles_ok=2,
        cycles_failed=0, mean_energy_per_output_token_j=y, ci95_energy_per_output_token_j=None,
        cv_energy_per_output_token=None, mean_net_energy_per_output_token_j=None,
        ci95_net_energy_per_output_token_j=None, median_output_tokens_per_s=x,
        median_avg_power_w=None, median_ttft_p50_ms=None, median_itl_p50_ms=None,
        max_energy_relative_bound=None,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_the_pairwise_definition(seed: int) -> None:
    rng = random.Random(seed)
    values = [None, *range(6)]  # few values: many ties
    rows = [_row(i, rng.choice(values), rng.choice(values)) for i in range(40)]
    for maximise in (True, False):
        sign = 1 if maximise else -1
        points = [
            (r, sign * r.median_output_tokens_per_s, r.mean_energy_per_output_token_j)
            for r in rows
            if r.median_output_tokens_per_s is not None
            and r.mean_energy_per_output_token_j is not None
        ]
        expected = sorted(
            (r for r, xa, ya in points
             if not any(xb >= xa and yb <= ya and (xb > xa or yb < ya) for _, xb, yb in points)),
            key=lambda r: r.median_output_tokens_per_s or 0,
        )  # fmt: skip
        front = pareto_front(
            rows, lambda r: r.median_output_tokens_per_s,
            lambda r: r.mean_energy_per_output_token_j, maximise,
        )  # fmt: skip
        assert front == expected


def test_swept_axes_tell_json_types_apart() -> None:
    def info(i: int, value: object) -> ExperimentInfo:
        return ExperimentInfo(f"e{i}", i, None, {"a": value, "b": [1, {"x": 1}]}, None)

    assert swept_axes([info(0, 1), info(1, 1.0)]) == ["a"]
    assert swept_axes([info(0, 1), info(1, True)]) == ["a"]
    assert swept_axes([info(0, "1"), info(1, 1)]) == ["a"]
    assert swept_axes([info(0, 1), info(1, 1)]) == []
    missing = ExperimentInfo("e2", 2, None, {"b": [1, {"x": 1}]}, None)
    assert swept_axes([info(0, None), missing]) == []
    assert swept_axes([info(0, 0), missing]) == ["a"]
