"""Every config shipped in configs/ is valid (a campaign, or a single experiment)."""

from __future__ import annotations

import re
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


def test_the_quickstarts_stated_duration_is_measured_and_covers_its_windows() -> None:
    """The quickstart file and the README say how long it takes on CPU, in seconds, the same
    figure, and no less than its measured windows alone (experiments × cycles × the window)."""
    root = Path(__file__).parent.parent
    quickstart = root / "configs" / "quickstart.yaml"
    stated = r"about (\d+) s on a 2-core\s+(?:#\s*)?CPU VM \((\d+)[-–](\d+) s measured"
    claims = [
        re.search(stated, text)
        for text in (quickstart.read_text(), (root / "README.md").read_text())
    ]
    assert all(claims), "say 'about N s on a 2-core CPU VM (A-B s measured' in both"
    figures = {tuple(int(n) for n in claim.groups()) for claim in claims if claim}
    [(about_s, low_s, high_s)] = figures  # the same figure in both
    plan = plan_campaign(quickstart)
    windows = [exp.config.min_window_s or 0.0 for exp in plan.experiments]
    assert low_s <= about_s <= high_s and low_s >= sum(windows) * plan.cycles
