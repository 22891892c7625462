"""Every config shipped in configs/ is valid (a campaign, or a single experiment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.planning.config_loader import load_experiment, read_yaml_mapping

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path: Path) -> None:
    if "experiment" in read_yaml_mapping(path):
        plan = plan_campaign(path)
        assert plan.experiments and plan.cycles >= 1
    else:
        assert load_experiment(path).model.source in ("builtin", "random", "hf", "gguf")
