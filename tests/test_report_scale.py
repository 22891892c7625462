"""The report's per-experiment rows at scale: the Pareto front in one sweep agrees with its
pairwise definition, and the rows read from the measurements' flat columns agree with
``results_table.experiment_rows``'s."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import pytest

from lem.coordinator.report.rows import ExperimentRow, columns_table, experiment_table, pareto_front
from lem.coordinator.results.table import open_for_reading
from lem.coordinator.store.results_store import Store
from tests.report_stores import gpu_like_campaign
from tests.synthetic_results import add_campaign, config


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-experiment campaign (sleep backend, replayed two-GPU NVML)."""
    db, _ = gpu_like_campaign(tmp_path_factory.mktemp("source"))
    return db


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
