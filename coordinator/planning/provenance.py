"""Where each effective field of an experiment came from.

Sources, latest winning: ``default`` (the msgspec default), a file label (the campaign
file, or a file it ``_extends``), ``experiments[<i>]``, then the axis that set the value
(``grid.<field>``, ``zip.<n>``, ``backends.<backend>.grid.<field>`` or
``backends.<backend>.zip.<n>``). Keys are dotted field paths such as ``model.dtype``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lem.protocol.config import ExperimentConfig

DEFAULT_SOURCE = "default"


def dotted_leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.dtype": "auto", ...}``: every leaf of a builtins tree (lists are leaves)."""
    if isinstance(value, dict) and value:
        leaves: dict[str, Any] = {}
        for key, child in value.items():
            leaves.update(dotted_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
        return leaves
    return {prefix: value}


def set_source(sources: dict[str, str], dotted: str, value: Any, source: str) -> None:
    """Record that ``source`` replaced the field ``dotted`` with ``value`` (a mapping value
    replaces the whole section, so older sources under it are dropped)."""
    for stale in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[stale]
    for leaf in dotted_leaves(value, dotted):
        sources[leaf] = source


def merge_sources(sources: dict[str, str], value: dict[str, Any], source: str) -> None:
    """Record a deep merge of ``value`` (mappings merge, other values replace)."""
    for leaf, leaf_value in dotted_leaves(value).items():
        set_source(sources, leaf, leaf_value, source)


def source_of(sources: dict[str, str], dotted: str) -> str:
    """The source of one effective leaf: its own entry, else its nearest set ancestor."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:cut]))
        if found is not None:
            return found
    return DEFAULT_SOURCE


def effective_provenance(config: ExperimentConfig, sources: dict[str, str]) -> dict[str, str]:
    """Every effective field of ``config`` (dotted) → the source that set it."""
    leaves = dotted_leaves(msgspec.to_builtins(config))
    return {leaf: source_of(sources, leaf) for leaf in leaves}


def effective_values(config: ExperimentConfig) -> dict[str, Any]:
    """Every effective field of ``config`` (dotted) → its value (builtins)."""
    return dotted_leaves(msgspec.to_builtins(config))
