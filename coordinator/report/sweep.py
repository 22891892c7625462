"""The axes a campaign sweeps: the config fields whose value differs between its
experiments, found in one pass over them (each compared with the first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

# Config fields that differ between experiments without being an axis of the sweep.
NOT_AXES = frozenset({"name"})


@dataclass(frozen=True)
class ExperimentInfo:
    """One experiment: its effective config (dotted leaves) and each field's source. In a
    sampled campaign, an experiment the page does not detail keeps only its swept axes'
    values in ``config``."""

    id: str
    position: int
    name: str | None
    config: dict[str, Any]
    provenance: dict[str, str] | None  # None: stored before provenance was recorded


def _same(a: Any, b: Any) -> bool:
    """Whether two config values are equal as JSON (``1`` ≠ ``1.0`` ≠ ``true``)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str or kind is int or kind is bool or a is None:
        return bool(a == b)
    if kind is float:
        return repr(a) == repr(b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def leaves(
    tree: dict[str, Any], prefix: str = "", into: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``planning.provenance.dotted_leaves`` of a config (every leaf by its dotted name;
    lists and empty mappings are leaves), filled in place: several times faster."""
    out: dict[str, Any] = {} if into is None else into
    for key, value in tree.items():
        if type(value) is dict and value:
            leaves(value, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = value
    return out


_SECTIONS = msgspec.json.Decoder(dict[str, msgspec.Raw])


class Sweep:
    """The swept axes of experiments seen one at a time: each experiment's config is
    compared with the first's; a field is an axis when it differs in any. Configs are
    compared by top-level section: one whose JSON text is the first's is skipped whole
    (the store writes configs with sorted keys), so a sweep of 100,000 experiments decodes
    and compares little beyond its axes; a section whose text differs is compared leaf by
    leaf, as JSON values (``1`` ≠ ``1.0`` ≠ ``true``)."""

    def __init__(self) -> None:
        self.reference: dict[str, Any] | None = None  # the first config's dotted leaves
        self._sections: dict[str, tuple[msgspec.Raw, dict[str, Any]]] = {}  # JSON, leaves
        self.varying: set[str] = set()
        self.by_axis: set[str] = set()  # fields a grid, zip or backends list set somewhere
        self._seen_provenance: set[int] = set()
        self.count = 0

    def add(self, config: dict[str, Any], provenance: dict[str, str] | None) -> dict[str, Any]:
        """Take one experiment's config (nested, or its dotted leaves); the dotted fields
        where it differs from the first (a missing field is None)."""
        sections = {k: msgspec.Raw(msgspec.json.encode(v)) for k, v in config.items()}
        return self._add(sections, provenance)

    def add_json(
        self, config_json: str | bytes, provenance: dict[str, str] | None
    ) -> dict[str, Any]:
        """``add`` for a config as the store keeps it (JSON text)."""
        return self._add(_SECTIONS.decode(config_json), provenance)

    def _add(
        self, sections: dict[str, msgspec.Raw], provenance: dict[str, str] | None
    ) -> dict[str, Any]:
        self.count += 1
        if provenance is not None and id(provenance) not in self._seen_provenance:
            self._seen_provenance.add(id(provenance))
            self.by_axis.update(
                k for k, v in provenance.items() if v.split(".")[0] in ("grid", "zip", "backends")
            )
        if self.reference is None:
            self._sections = {
                k: (text, leaves({k: msgspec.json.decode(text)})) for k, text in sections.items()
            }
            self.reference = {k: v for _, sub in self._sections.values() for k, v in sub.items()}
            return {}
        differences: dict[str, Any] = {}
        for key, text in sections.items():
            section = self._sections.get(key)
            if section is not None and text == section[0]:
                continue
            mine = leaves({key: msgspec.json.decode(text)})
            theirs = {} if section is None else section[1]
            differences.update((k, v) for k, v in mine.items() if not _same(v, theirs.get(k)))
            differences.update(
                (k, None) for k, v in theirs.items() if k not in mine and v is not None
            )
        if sections.keys() != self._sections.keys():
            for key in self._sections.keys() - sections.keys():
                differences.update(
                    (k, None) for k, v in self._sections[key][1].items() if v is not None
                )
        self.varying.update(differences)
        return differences

    def axes(self) -> list[str]:
        """Fields a grid or zip set first, then the rest, each by name."""
        if self.count < 2:
            return []
        varying = self.varying - NOT_AXES
        return sorted(varying, key=lambda k: (k not in self.by_axis, k))


def swept_axes(experiments: list[ExperimentInfo]) -> list[str]:
    """Config fields (dotted) whose value differs between experiments: the sweep's axes.

    Fields a grid or zip set come first (in provenance order), then the rest by name.
    """
    sweep = Sweep()
    for e in experiments:
        sweep.add(e.config, e.provenance)
    return sweep.axes()
