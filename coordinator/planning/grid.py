"""A campaign's points, expanded lazily: blocks of mixed-radix products over axes.

A *block* is one base experiment (the campaign's ``experiment``, or one entry of
``experiments:`` merged over it) times the product of its axes. An *axis* is one grid
field, one ``zip`` group (fields stepping together) or one per-backend axis. Point ``i``
of a block is decoded from ``i`` digit by digit (mixed radix), so nothing is materialised:
``len`` is a product, ``plan.experiments[i]`` builds and validates one experiment.

Axes that change the load key (``lem.protocol.config.affects_load_key``) are the most
significant digits, so points that share a loaded model are consecutive.
"""

from __future__ import annotations

import bisect
import copy
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from lem.coordinator.planning.config_loader import ConfigError, experiment_from_mapping
from lem.coordinator.planning.provenance import effective_provenance, set_source, source_of
from lem.protocol.config import ExperimentConfig, load_key

# The source of a name lem made up from the campaign, the base name and the axes.
GENERATED_SOURCE = "generated"
# The source of a value given on the command line (``--set``).
CLI_SOURCE = "cli"


@dataclass(frozen=True)
class PlannedExperiment:
    """One point: its position, a readable name, config, load key and, per effective
    dotted field, the source that set it (``lem.coordinator.planning.provenance``)."""

    position: int
    name: str
    config: ExperimentConfig
    load_key: str
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Axis:
    """One digit of the mixed radix: ``fields`` take ``steps[k]`` together at step k."""

    label: str
    fields: tuple[str, ...]
    steps: tuple[tuple[Any, ...], ...]
    affects_load_key: bool
    names: tuple[str, ...] | None = None  # how a name shows each step (default: field=value)

    def field_label(self, dotted: str) -> str:
        """How errors name one field of this axis (``grid.x``, ``zip.0.x``)."""
        return self.label if self.fields == (dotted,) else f"{self.label}.{dotted}"


def set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    """``mapping["a"]["b"] = value`` for ``a.b``, creating mappings on the way."""
    parts = dotted.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


@dataclass
class Block:
    """One base experiment × the product of its axes (``axes`` slowest first)."""

    path: Path
    campaign: str
    base: dict[str, Any]
    sources: dict[str, str]
    axes: list[Axis]
    name_order: list[str]  # axis labels in file order, for readable names
    default_name: str | None
    extended_files: frozenset[str] = frozenset()
    offset: int = 0

    @property
    def size(self) -> int:
        size = 1
        for axis in self.axes:
            size *= len(axis.steps)
        return size

    def digits(self, index: int) -> list[int]:
        """Mixed-radix digits of ``index`` within the block (most significant first)."""
        digits = [0] * len(self.axes)
        for k in range(len(self.axes) - 1, -1, -1):
            index, digits[k] = divmod(index, len(self.axes[k].steps))
        return digits

    def index_of(self, digits: list[int]) -> int:
        index = 0
        for axis, digit in zip(self.axes, digits, strict=True):
            index = index * len(axis.steps) + digit
        return index

    def build(self, digits: list[int]) -> PlannedExperiment:
        """The validated experiment at ``digits``; raises a one-line ``ConfigError``."""
        point = copy.deepcopy(self.base)
        sources = dict(self.sources)
        chosen: dict[str, str] = {}
        for axis, digit in zip(self.axes, digits, strict=True):
            labels = []
            for dotted, value in zip(axis.fields, axis.steps[digit], strict=True):
                set_dotted(point, dotted, value)
                set_source(sources, dotted, value, axis.label)
                labels.append(f"{dotted}={value}")
            chosen[axis.label] = axis.names[digit] if axis.names else ",".join(labels)
        label = ",".join(chosen[name] for name in self.name_order if name in chosen)
        base_name = point.get("name") if isinstance(point.get("name"), str) else None
        base_name = base_name or self.default_name
        name = (f"{base_name}[{label}]" if base_name else label) if label else None
        name = name or base_name or self.campaign
        point["name"] = name
        if label or "name" not in sources:
            sources["name"] = GENERATED_SOURCE
        try:
            config = experiment_from_mapping(point, self.path, prefix="experiment.")
        except ConfigError as exc:
            raise self._attribute(exc, digits, sources) from exc
        position = self.offset + self.index_of(digits)
        return PlannedExperiment(
            position, name, config, load_key(config), effective_provenance(config, sources)
        )

    def _attribute(
        self, exc: ConfigError, digits: list[int], sources: dict[str, str]
    ) -> ConfigError:
        """Name the axis, the ``experiments:`` entry or the extended file that set the bad
        value, rather than the base experiment."""
        dotted = (exc.field or "").removeprefix("experiment.")
        for axis, digit in zip(self.axes, digits, strict=True):
            for name, value in zip(axis.fields, axis.steps[digit], strict=True):
                if dotted == name or dotted.startswith(name + "."):
                    label = axis.field_label(name)
                    return ConfigError(exc.path, label, f"value {value!r}: {exc.problem}")
        source = source_of(sources, dotted) if dotted else "default"
        if source == CLI_SOURCE:
            return ConfigError(exc.path, f"--set {dotted}", exc.problem)
        if source.startswith("experiments["):
            return ConfigError(exc.path, f"{source}.{dotted}", exc.problem)
        if source in self.extended_files:
            extended = self.path.resolve().parent / source
            return ConfigError(extended, exc.field, exc.problem)
        return exc

    def spot_check(self) -> None:
        """Build point 0 and, for every axis, each of its steps with the other axes at their
        first step: every axis value is validated in a real point before anything runs."""
        zero = [0] * len(self.axes)
        self.build(zero)
        for k, axis in enumerate(self.axes):
            for step in range(1, len(axis.steps)):
                digits = list(zero)
                digits[k] = step
                self.build(digits)


class LazyExperiments(Sequence[PlannedExperiment]):
    """The campaign's points as a sequence: ``len`` without expansion, ``[i]`` builds one."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        offset = 0
        self._starts: list[int] = []
        for block in blocks:
            block.offset = offset
            self._starts.append(offset)
            offset += block.size
        self._count = offset

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> PlannedExperiment: ...

    @overload
    def __getitem__(self, index: slice) -> list[PlannedExperiment]: ...

    def __getitem__(self, index: int | slice) -> PlannedExperiment | list[PlannedExperiment]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"experiment {index} of {self._count}")
        block = self.blocks[bisect.bisect_right(self._starts, index) - 1]
        return block.build(block.digits(index - block.offset))

    def __iter__(self) -> Iterator[PlannedExperiment]:
        for index in range(self._count):
            yield self[index]

    def covering(self, fields: tuple[str, ...]) -> Iterator[PlannedExperiment]:
        """Experiments that together take every combination of values of the top-level
        ``fields`` that the plan takes: per block, the product of the axes that set one of
        them (or a section above one), every other axis at its first step. Far fewer than
        the plan (e.g. the GPU requests of a million-point grid are checked in a few)."""

        def touches(axis: Axis) -> bool:
            return any(f.split(".")[0] in fields for f in axis.fields)

        for block in self.blocks:
            relevant = [k for k, axis in enumerate(block.axes) if touches(axis)]
            for steps in itertools.product(*(range(len(block.axes[k].steps)) for k in relevant)):
                digits = [0] * len(block.axes)
                for k, step in zip(relevant, steps, strict=True):
                    digits[k] = step
                yield block.build(digits)
