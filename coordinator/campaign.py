"""Campaign files: a base experiment, a Cartesian grid over named fields, and cycles.

```yaml
name: quickstart
experiment: {model: {source: builtin, name: lem-tiny}, output_tokens: 32}
grid: {batch_size: [1, 4], model.dtype: [float32]}
cycles: 2
```
Every grid point is validated before anything runs or is stored.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.config_loader import (
    ConfigError,
    check_dotted_path,
    experiment_from_mapping,
    read_yaml_mapping,
)
from lem.protocol.config import ExperimentConfig, load_key


class CampaignFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The top level of a campaign file."""

    name: str
    experiment: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    cycles: int = 1


@dataclass(frozen=True)
class PlannedExperiment:
    """One grid point: its position, a readable name, config and load key."""

    position: int
    name: str
    config: ExperimentConfig
    load_key: str


@dataclass(frozen=True)
class CampaignPlan:
    name: str
    source_path: Path
    source_hash: str
    cycles: int
    experiments: list[PlannedExperiment]


def _set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _point_name(campaign: str, axes: dict[str, Any], base_name: str | None) -> str:
    if not axes:
        return base_name or campaign
    label = ",".join(f"{k}={v}" for k, v in axes.items())
    return f"{base_name}[{label}]" if base_name else label


def plan_campaign(path: Path) -> CampaignPlan:
    """Read, expand and validate a campaign file. Raises ``ConfigError``."""
    raw = read_yaml_mapping(path)
    try:
        campaign = msgspec.convert(raw, CampaignFile, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "unknown field" in text:
            name = text.split("`")[1]
            raise ConfigError(
                path, name, "unknown top-level field (known: name, experiment, grid, cycles)"
            ) from exc
        field = text.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in text else None
        raise ConfigError(path, field, text.split(" - at ")[0].replace("`", "'").lower()) from exc
    if campaign.cycles < 1:
        raise ConfigError(path, "cycles", f"must be >= 1, got {campaign.cycles}")
    for axis, values in campaign.grid.items():
        check_dotted_path(axis, path, f"grid.{axis}")
        if not values:
            raise ConfigError(path, f"grid.{axis}", "needs at least one value")
    base_name = campaign.experiment.get("name")
    axes = list(campaign.grid)
    experiments: list[PlannedExperiment] = []
    for position, combo in enumerate(itertools.product(*(campaign.grid[a] for a in axes))):
        point = copy.deepcopy(campaign.experiment)
        chosen = dict(zip(axes, combo, strict=True))
        for axis, value in chosen.items():
            _set_dotted(point, axis, value)
        point["name"] = _point_name(campaign.name, chosen, base_name)
        try:
            config = experiment_from_mapping(point, path, prefix="experiment.")
        except ConfigError as exc:
            raise _attribute_to_axis(exc, chosen) from exc
        experiments.append(PlannedExperiment(position, point["name"], config, load_key(config)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return CampaignPlan(campaign.name, path, digest, campaign.cycles, experiments)


def _attribute_to_axis(exc: ConfigError, chosen: dict[str, Any]) -> ConfigError:
    """Name the grid axis when a bad value came from the grid rather than the base."""
    field = (exc.field or "").removeprefix("experiment.")
    for axis, value in chosen.items():
        if field == axis or field.startswith(axis + "."):
            return ConfigError(exc.path, f"grid.{axis}", f"value {value!r}: {exc.problem}")
    return exc


def single_experiment_plan(path: Path, config: ExperimentConfig, cycles: int) -> CampaignPlan:
    """A one-experiment campaign for ``lem run``."""
    name = config.name or path.stem
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return CampaignPlan(
        name, path, digest, cycles, [PlannedExperiment(0, name, config, load_key(config))]
    )
