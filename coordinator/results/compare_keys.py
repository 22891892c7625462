"""The matching key of ``lem compare``: an experiment's effective config as its ``config.*``
columns hold it (results/columns.py: each leaf coerced to its column's kind; a field the
stored config lacks is None), over the fields that take part in the matching.

``KeyReader`` gives the key of a stored ``config_json`` text. It decodes the text into a
msgspec view typed with the columns' kinds — the JSON walked in C, only the key's fields
kept — and falls back to decoding it as plain JSON and coercing field by field (what
``results export`` does) for a text the view does not take (an int where a float column
is, a section that is null …); both give the same key. Keys are kept by text, so the many
experiments of two campaigns run from one campaign file are keyed once.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import msgspec

from lem.coordinator.results.columns import CONFIG_KINDS, Kind, coerce
from lem.coordinator.results.generic_row import lookup

_VIEW_TYPES: dict[Kind, Any] = {
    "float": float | None,  # msgspec takes an int here as float(int), as coerce does
    "int": int | None,  # a float or bool is refused: the plain path coerces it
    "bool": bool | None,
    "str": Any,  # a struct or list leaf: coerced to JSON text after decoding
}


def _view_type(leaves: Sequence[str], prefix: str = "") -> type[msgspec.Struct]:
    """A struct type with a field per top-level key of ``leaves`` (dotted, under ``prefix``;
    a nested struct for a section, there even when the JSON lacks it), each leaf typed by
    its column's kind and None when the JSON lacks it."""
    sections: dict[str, list[str]] = {}
    for leaf in leaves:
        top, _, rest = leaf.partition(".")
        sections.setdefault(top, [])
        if rest:
            sections[top].append(rest)
    fields: list[tuple[str, Any, Any]] = []
    for top, rests in sections.items():
        if rests:
            section = _view_type(rests, f"{prefix}{top}.")
            fields.append((top, section, msgspec.field(default_factory=section)))
        else:
            fields.append((top, _VIEW_TYPES[CONFIG_KINDS[prefix + top]], None))
    return msgspec.defstruct("ConfigKeyView", fields)


class KeyReader:
    """Keys over ``leaves`` (dotted config fields, in key order) of config JSON texts."""

    def __init__(self, leaves: Sequence[str]) -> None:
        self.leaves = list(leaves)
        self.kinds = [CONFIG_KINDS[leaf] for leaf in self.leaves]
        self._str_at = [i for i, kind in enumerate(self.kinds) if kind == "str"]
        self._decoder = msgspec.json.Decoder(_view_type(self.leaves)) if self.leaves else None
        self._get = operator.attrgetter(*self.leaves) if self.leaves else None
        self._keys: dict[str, tuple[Any, ...]] = {}

    def key(self, config_json: str) -> tuple[Any, ...]:
        """The key of one stored config text."""
        found = self._keys.get(config_json)
        if found is None:
            found = self._keys[config_json] = self._compute(config_json)
        return found

    def plain_key(self, config_json: str) -> tuple[Any, ...]:
        """The key the slow, plain way: JSON decoded, each field looked up and coerced."""
        config = msgspec.json.decode(config_json)
        return tuple(
            coerce(kind, lookup(config, leaf))
            for leaf, kind in zip(self.leaves, self.kinds, strict=True)
        )

    def _compute(self, config_json: str) -> tuple[Any, ...]:
        if self._decoder is None or self._get is None:
            return ()
        try:
            view = self._decoder.decode(config_json)
        except msgspec.ValidationError:
            return self.plain_key(config_json)
        values = self._get(view)
        if len(self.leaves) == 1:
            values = (values,)
        odd = [i for i in self._str_at if (v := values[i]) is not None and type(v) is not str]
        if odd:
            values = tuple(coerce("str", v) if i in odd else v for i, v in enumerate(values))
        return tuple(values)
