"""Campaign files: a base experiment, axes to sweep, explicit experiments, cycles, order.

```yaml
_extends: common.yaml            # optional: files merged under this one (docs/campaigns.md)
name: quickstart
experiment: {model: {source: builtin, name: lem-tiny}, output_tokens: 32}
grid: {batch_size: [1, 4], model.dtype: [float32]}       # Cartesian product
zip: [{input_tokens: [32, 128], output_tokens: [32, 64]}]  # fields stepping together
backends: {pytorch: {grid: {pytorch.cache_implementation: [dynamic, static]}}}
experiments: [{name: a}, {name: b, num_prompts: 16}]      # each merged over experiment
cycles: 2
order: grouped                   # grouped | interleaved | shuffled (with seed)
cluster: ray://head:10001        # optional: run on a Ray cluster (docs/cluster.md)
```
Planning is lazy (``lem.coordinator.planning.grid``): every axis value is validated in a real
point when the file is read; each point is validated in full when it is produced.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.planning.config_loader import (
    MAX_FILE_BYTES,
    ConfigError,
    check_dotted_path,
    problem_text,
    read_yaml_mapping,
)
from lem.coordinator.planning.extends import MergedDocument, read_with_extends
from lem.coordinator.planning.grid import (
    CLI_SOURCE,
    GENERATED_SOURCE,
    Axis,
    Block,
    LazyExperiments,
    PlannedExperiment,
    set_dotted,
)
from lem.coordinator.planning.ordering import Order, schedule
from lem.coordinator.planning.provenance import effective_provenance, merge_sources, set_source
from lem.coordinator.planning.safe_yaml import read_regular_file
from lem.coordinator.planning.sweep_axis import check_no_sweep_axis, is_rate_sweep, sweep_axis
from lem.protocol.bounds import value_problems
from lem.protocol.config import BackendName, ExperimentConfig, affects_load_key, load_key
from lem.protocol.engines.registry import ENGINE_NAMES

__all__ = [
    "MAX_POINTS",
    "CampaignFile",
    "CampaignPlan",
    "PlannedExperiment",
    "plan_campaign",
    "plan_schedule",
    "single_experiment_plan",
]

MAX_POINTS = 100_000_000
BACKENDS: tuple[str, ...] = ENGINE_NAMES
AxisValues = dict[str, list[Any]]


class BackendAxes(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Axes that apply only to the experiments of one backend."""

    grid: AxisValues = {}
    zip_groups: list[AxisValues] = msgspec.field(default_factory=list, name="zip")


class CampaignFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The top level of a campaign file (after ``_extends`` is merged)."""

    name: str
    experiment: dict[str, Any] = {}
    experiments: list[dict[str, Any]] = []
    grid: AxisValues = {}
    zip_groups: list[AxisValues] = msgspec.field(default_factory=list, name="zip")
    backends: dict[str, BackendAxes] = {}
    cycles: int = 1
    order: Order = "grouped"
    seed: int = 0
    max_attempts: int = 2
    cluster: str | None = None


class CampaignSchema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The campaign file as ``lem config schema`` documents it: typed experiments. Axis
    keys are dotted ExperimentConfig fields; each list holds that field's values."""

    extends: str | list[str] | None = msgspec.field(default=None, name="_extends")
    name: str
    experiment: ExperimentConfig = msgspec.field(default_factory=ExperimentConfig)
    experiments: list[ExperimentConfig] = []
    grid: AxisValues = {}
    zip_groups: list[AxisValues] = msgspec.field(default_factory=list, name="zip")
    backends: dict[BackendName, BackendAxes] = {}
    cycles: int = 1
    order: Order = "grouped"
    seed: int = 0
    max_attempts: int = 2
    cluster: str | None = None


TOP_LEVEL: tuple[str, ...] = ("_extends", "name", "experiment", "experiments", "grid", "zip")
TOP_LEVEL += ("backends", "cycles", "order", "seed", "max_attempts", "cluster")


@dataclass(frozen=True)
class CampaignPlan:
    """A planned campaign; ``experiments`` is a lazy sequence for campaign files."""

    name: str
    source_path: Path
    source_hash: str
    cycles: int
    experiments: Sequence[PlannedExperiment]
    order: Order = "grouped"
    seed: int = 0
    max_attempts: int = 2  # attempts a cycle gets when its worker dies, hangs or times out
    cluster: str | None = None  # a Ray cluster's address (docs/cluster.md); None: this host
    # (or a started server does not start)


def plan_schedule(plan: CampaignPlan) -> Iterator[tuple[int, int]]:
    """The (experiment position, cycle) pairs to run, in the campaign's ``order``."""
    return schedule(len(plan.experiments), plan.cycles, plan.order, plan.seed)


def _convert(document: MergedDocument, path: Path) -> CampaignFile:
    try:
        return msgspec.convert(document.data, CampaignFile, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "unknown field" in text and "`$." not in text:
            name = text.split("`")[1]
            known = ", ".join(TOP_LEVEL)
            raise ConfigError(path, name, f"unknown top-level field (known: {known})") from exc
        field = text.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in text else None
        field = field.replace("zip_groups", "zip") if field else field
        problem = problem_text(CampaignFile, field or "", text.split(" - at ")[0])
        raise ConfigError(path, field, problem) from exc


def _axes(path: Path, label: str, grid: AxisValues, groups: list[AxisValues]) -> list[Axis]:
    """Grid fields and zip groups as axes, in file order; checks names and lengths."""
    axes: list[Axis] = []
    for dotted, values in grid.items():
        where = f"{label}grid.{dotted}"
        check_dotted_path(dotted, path, where)
        if not values:
            raise ConfigError(path, where, "needs at least one value")
        steps = tuple((v,) for v in values)
        axes.append(Axis(where, (dotted,), steps, affects_load_key(dotted)))
    for n, group in enumerate(groups):
        where = f"{label}zip.{n}"
        if not group:
            raise ConfigError(path, where, "needs at least one field")
        for dotted in group:
            check_dotted_path(dotted, path, f"{where}.{dotted}")
        lengths = {dotted: len(values) for dotted, values in group.items()}
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"{d} has {n_}" for d, n_ in lengths.items())
            raise ConfigError(path, where, f"lists must have equal lengths: {shown}")
        if 0 in lengths.values():
            raise ConfigError(path, where, "needs at least one value")
        steps = tuple(zip(*group.values(), strict=True))
        fields = tuple(group)
        axes.append(Axis(where, fields, steps, any(affects_load_key(d) for d in fields)))
    return axes


def _check_overlaps(path: Path, axes: list[Axis]) -> None:
    """One field, one axis: ``model`` and ``model.dtype`` in two axes is ambiguous."""
    seen: dict[str, str] = {}
    for axis in axes:
        for dotted in axis.fields:
            if dotted == "backend":
                raise ConfigError(
                    path, axis.field_label(dotted), "vary the backend with experiments: entries"
                )
            for other, owner in seen.items():
                if _overlap(dotted, other):
                    raise ConfigError(
                        path, axis.field_label(dotted), f"'{other}' is already set by {owner}"
                    )
            seen[dotted] = axis.field_label(dotted)


def _overlap(one: str, other: str) -> bool:
    """Whether two dotted fields are the same, or one lies inside the other."""
    return one == other or one.startswith(other + ".") or other.startswith(one + ".")


def _base_backend(base: dict[str, Any]) -> str:
    backend = base.get("backend", ExperimentConfig().backend)
    return backend if isinstance(backend, str) else ExperimentConfig().backend


def plan_campaign(path: Path, overrides: Sequence[tuple[str, Any]] = ()) -> CampaignPlan:
    """Read a campaign file (with ``_extends``), check every axis value, plan lazily.

    ``overrides``: (dotted field, value) pairs from the command line (``--set``); they win
    over the files and ``experiments:`` entries, and may not name an axis field.

    Raises ``ConfigError`` (one line naming file and field)."""
    document = read_with_extends(path)
    campaign = _convert(document, path)
    bounds = value_problems(campaign)  # numbers bounded, strings printable (protocol/bounds)
    if bounds:
        field, problem = bounds[0]
        raise ConfigError(path, field, problem)
    if campaign.cycles < 1:
        raise ConfigError(path, "cycles", f"must be >= 1, got {campaign.cycles}")
    if campaign.max_attempts < 1:
        raise ConfigError(path, "max_attempts", f"must be >= 1, got {campaign.max_attempts}")
    for backend in campaign.backends:
        if backend not in BACKENDS:
            known = ", ".join(BACKENDS)
            raise ConfigError(path, f"backends.{backend}", f"unknown backend (known: {known})")
    shared = _axes(path, "", campaign.grid, campaign.zip_groups)
    per_backend = {
        b: _axes(path, f"backends.{b}.", axes.grid, axes.zip_groups)
        for b, axes in campaign.backends.items()
    }
    file_sources = {
        ".".join(key[1:]): source
        for key, source in document.sources.items()
        if key[0] == "experiment" and len(key) > 1
    }
    extended = frozenset(document.sources.values()) - {str(path)}
    variants: list[tuple[dict[str, Any], str | None, dict[str, str]]] = []
    if not campaign.experiments:
        variants.append((copy.deepcopy(campaign.experiment), None, file_sources))
    for i, entry in enumerate(campaign.experiments):
        base = copy.deepcopy(campaign.experiment)
        sources = dict(file_sources)
        _merge(base, entry)
        merge_sources(sources, entry, f"experiments[{i}]")
        variants.append((base, f"experiments[{i}]", sources))
    for dotted, value in overrides:
        check_dotted_path(dotted, path, f"--set {dotted}")
        for base, _, sources in variants:
            set_dotted(base, dotted, value)
            set_source(sources, dotted, value, CLI_SOURCE)
    blocks: list[Block] = []
    for base, default_name, sources in variants:
        axes = shared + per_backend.get(_base_backend(base), [])
        _check_overlaps(path, axes)
        for dotted, _ in overrides:
            for axis in axes:
                if any(_overlap(dotted, f) for f in axis.fields):
                    raise ConfigError(path, f"--set {dotted}", f"is an axis field ({axis.label})")
        check_no_sweep_axis(path, axes)
        # GPU settings outermost (each change is an NVML call and a settling wait), then
        # what changes the loaded model, then the rest
        ordered_axes = [a for a in axes if _sets_gpu(a)]
        ordered_axes += [a for a in axes if a.affects_load_key and not _sets_gpu(a)]
        ordered_axes += [a for a in axes if not a.affects_load_key and not _sets_gpu(a)]
        swept = sweep_axis(path, base, default_name or "experiment")
        if swept is not None:
            if campaign.order == "shuffled" and is_rate_sweep(base):
                raise ConfigError(
                    path, "order", "shuffled cannot run a workload.sweep of rates: its rates "
                    "follow from the probe measured first (use grouped or interleaved)",
                )  # fmt: skip
            ordered_axes.append(swept)  # innermost: a sweep's points are consecutive
        block = Block(
            path, campaign.name, base, sources, ordered_axes,
            [a.label for a in axes] + [a.label for a in ordered_axes[len(axes) :]],
            default_name, extended,
        )  # fmt: skip
        block.spot_check()
        blocks.append(block)
    total = sum(block.size for block in blocks)
    if total > MAX_POINTS:
        raise ConfigError(path, "grid", f"{total} experiments; the limit is {MAX_POINTS}")
    experiments = LazyExperiments(_grouped_by_load_key(blocks))
    return CampaignPlan(
        campaign.name, path, document.source_hash, campaign.cycles, experiments,
        campaign.order, campaign.seed, campaign.max_attempts, campaign.cluster,
    )  # fmt: skip


def _sets_gpu(axis: Axis) -> bool:
    """Whether ``axis`` sets a GPU power limit or clock (``gpu.*``)."""
    return any(f == "gpu" or f.startswith("gpu.") for f in axis.fields)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Deep merge: mappings merge, lists and scalars replace."""
    for key, value in over.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _grouped_by_load_key(blocks: list[Block]) -> list[Block]:
    """Blocks whose first points share a load key next to each other (first-seen order)."""
    first_seen: dict[str, int] = {}
    keys = [block.build([0] * len(block.axes)).load_key for block in blocks]
    for n, key in enumerate(keys):
        first_seen.setdefault(key, n)
    order = sorted(range(len(blocks)), key=lambda n: (first_seen[keys[n]], n))
    return [blocks[n] for n in order]


def single_experiment_plan(path: Path, config: ExperimentConfig, cycles: int) -> CampaignPlan:
    """A one-experiment campaign for ``lem run`` (``path`` is the experiment file that gave
    ``config``; its fields' provenance is that file, the rest ``default``)."""
    name = config.name or path.stem
    sources: dict[str, str] = {}
    merge_sources(sources, read_yaml_mapping(path), str(path))
    if config.workload.sweep is not None:
        raise ConfigError(
            path, "workload.sweep", "a load sweep runs as a campaign: lem campaign FILE"
        )
    if not config.name:
        sources["name"] = GENERATED_SOURCE
    digest = hashlib.sha256(read_regular_file(path, MAX_FILE_BYTES)).hexdigest()[:16]
    planned = PlannedExperiment(
        0, name, config, load_key(config), effective_provenance(config, sources)
    )
    return CampaignPlan(name, path, digest, cycles, [planned])
