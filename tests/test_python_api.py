"""``lem.run`` and ``lem.load_results`` from Python, running the built-in model on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lem
from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.results.python_api import _non_default
from lem.coordinator.results.table import COLUMNS
from lem.coordinator.store.results_store import Store
from lem.protocol.config import ExperimentConfig, ModelConfig

TINY = {
    "device": "cpu",
    "model": {"source": "builtin", "name": "lem-tiny"},
    "batch_size": 2,
    "num_prompts": 2,
    "input_tokens": 4,
    "output_tokens": 4,
}


def test_run_a_mapping_then_load_its_results(tmp_path: Path) -> None:
    db = tmp_path / "results" / "lem.db"
    campaign_id = lem.run({**TINY, "name": "api-tiny"}, store=db, cycles=2)
    frame = lem.load_results(db, campaign_id)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["cycle"]) == [0, 1] and set(frame["status"]) == {"ok"}
    assert set(frame["campaign_name"]) == {"api-tiny"} and set(frame["config.batch_size"]) == {2}
    assert (frame["output_tokens_per_s"] > 0).all()
    assert frame["energy_j"].isna().all()  # no GPU here: null with the reason, never 0
    assert frame["energy_unavailable_reason"].notna().all()
    source = next((tmp_path / "results" / "python-api").glob("api-tiny-*.yaml"))
    assert yaml.safe_load(source.read_text())["batch_size"] == 2
    with Store(db) as store:
        [campaign] = store.list_campaigns()
    assert campaign.id == campaign_id and campaign.status == "finished"
    assert campaign.source_path == str(source.resolve())


def test_run_a_campaign_file(tiny_campaign: Path, tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    campaign_id = lem.run(tiny_campaign, store=db)
    experiments = lem.load_results(db, campaign_id, level="experiment")
    assert list(experiments["config.batch_size"]) == [1, 2]
    assert list(experiments["cycles_ok"]) == [1, 1]


def test_a_bad_config_raises_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with pytest.raises(ConfigError, match="batch_size"):
        lem.run({**TINY, "batch_size": "two"}, store=db)
    assert not db.exists()
    with pytest.raises(ValueError, match="cycles"):
        lem.run(TINY, store=db, cycles=0)


def test_an_experiment_config_is_written_with_only_its_non_default_fields() -> None:
    config = ExperimentConfig(
        name="x", batch_size=4, model=ModelConfig(source="builtin", name="lem-tiny")
    )
    assert _non_default(config) == {
        "name": "x",
        "batch_size": 4,
        "model": {"name": "lem-tiny"},
    }
    assert _non_default(ExperimentConfig()) == {}


def test_load_results_rejects_an_unknown_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="level must be one of measurement, experiment"):
        lem.load_results(tmp_path / "lem.db", level="cycle")  # type: ignore[arg-type]
