"""Result rows from typed decoding: the cells ``generic_row`` makes, without its per-cell work.

A payload is decoded with msgspec into small structs that declare only the fields the
columns read, each typed as its column's kind (``float | None``, ...), where today's nested
``Measurement`` keeps it; every other field is skipped unparsed. A decoded value then needs
no coercion: msgspec gives exactly what ``coerce`` would (an integer read as a float column
becomes a float) and refuses anything else. A payload that decoding refuses, a flat one
(schema ≤ 4) and one without an environment are made by ``generic_row`` instead, so every row
is the cell-for-cell the same as there. An environment is turned into its columns once per
distinct environment (most rows of a campaign share one). An experiment's config is decoded
the same way, once per experiment.

Values come as tuples: ``SHARED_COLUMNS`` (identity, setup, config; one per experiment) and
``MEASURED_COLUMNS`` (the rest of a measurement row, in table order).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from lem.coordinator.results import generic_row
from lem.coordinator.results.columns import (
    CONFIG_KINDS,
    KINDS,
    LATENCY_METRICS,
    LATENCY_PERCENTILES,
    MEASUREMENT_COLUMNS,
    SHARED_COLUMNS,
    Kind,
    coerce,
)
from lem.protocol.result_payload import FLAT_FIELDS
from lem.protocol.results import SUB_RECORDS

Values = tuple[Any, ...]

MEASURED_COLUMNS: tuple[str, ...] = tuple(n for n in MEASUREMENT_COLUMNS if n not in SHARED_COLUMNS)
# The ``measurements`` columns a row reads besides its payload, in query order.
SQL_COLUMNS = ("cycle", "status", "failure_reason", "attempts", "worker_id", "recorded_at_unix_s")

_TYPES: dict[Kind, Any] = {"str": str | None, "int": int | None, "float": float | None}
_TYPES["bool"] = bool | None
_ENV_COLUMNS = tuple(generic_row.environment({"environment": {"x": 1}}))
_DERIVED = ("flags", *generic_row.energy_details({}), *generic_row.latency({}))
_DIRECT = tuple(
    n
    for n in MEASURED_COLUMNS
    if n not in {*SQL_COLUMNS, *_DERIVED, *_ENV_COLUMNS, "schema_version"}
)
_SUBS = tuple(SUB_RECORDS)  # in the order ``flat_payload`` merges them


def _struct(name: str, fields: list[tuple[str, Any]]) -> type[msgspec.Struct]:
    return msgspec.defstruct(name, [(f, t, None) for f, t in fields])


def _place(name: str) -> str:
    """The part of a nested payload that holds flat field ``name`` ("top": the payload)."""
    return FLAT_FIELDS.get(name) or "top"


def picker(positions: list[int]) -> Callable[[Sequence[Any]], Values]:
    """``operator.itemgetter`` that always returns a tuple."""
    if not positions:
        return lambda values: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


_Summary = _struct("_Summary", [(f"{p}_ms", float | None) for p in LATENCY_PERCENTILES])
_GpuEnergy = _struct("_GpuEnergy", [("method", str | None), ("idle_power_w", int | float | None)])
_Goodput = _struct("_Goodput", [("good_share", float | None)])
_ENERGY_DETAILS = tuple(generic_row.energy_details({}))
_LATENCY_CELLS = tuple(generic_row.latency({}))  # the percentiles, then goodput_share
_NONE_SUMMARY = (None,) * len(LATENCY_PERCENTILES)
assert FLAT_FIELDS["gpu_energy"] == "energy" and FLAT_FIELDS["goodput"] == "latency"
assert all(FLAT_FIELDS[f"{m}_ms"] == "latency" for m in LATENCY_METRICS)
_SQL_KINDS: tuple[Kind, ...] = tuple(KINDS[n] for n in SQL_COLUMNS)
_astuple = msgspec.structs.astuple
_ENV_CACHE_SIZE = 256
_PYTHON_TYPES: dict[Kind, type] = {"str": str, "int": int, "float": float, "bool": bool}


class _Layout:
    """How the values of some of ``MEASURED_COLUMNS`` come out of a payload: the structs
    that decode only the fields they read, and where each value is in the tuple made of
    the SQL columns, the payload's top fields, each sub-record's fields, the derived cells
    (flags, energy details, latency), the environment's and the schema version."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        wanted = set(columns)
        self.energy_details = bool(wanted & set(_ENERGY_DETAILS))
        self.latency = bool(wanted & set(_LATENCY_CELLS))
        sources: list[tuple[str, Any]] = []
        if self.energy_details:
            sources.append(("gpu_energy", list[_GpuEnergy] | None))  # type: ignore[valid-type]
        if self.latency:
            sources.extend((f"{m}_ms", _Summary | None) for m in LATENCY_METRICS)
            sources.append(("goodput", _Goodput | None))
        fields: dict[str, list[tuple[str, Any]]] = {part: [] for part in ("top", *_SUBS)}
        for name in _DIRECT:
            if name in wanted:
                fields[_place(name)].append((name, _TYPES[KINDS[name]]))
        for name, annotation in sources:
            fields[_place(name)].append((name, annotation))
        self.parts = {sub: _struct(f"_{sub}", fields[sub]) for sub in _SUBS}
        # A sub-record's field found at the top of a nested payload (no lem wrote one): the
        # flat view takes it, so generic_row reads such a payload.
        strays = [name for sub in _SUBS for name in self.parts[sub].__struct_fields__]
        self.payload = msgspec.defstruct(
            "_Payload",
            [
                *[(f, t, None) for f, t in fields["top"]],
                ("flags", list[str] | None, None),
                ("environment", msgspec.Raw, msgspec.Raw(b"")),
                *[(name, Any, msgspec.UNSET) for name in strays],
                *[(sub, part | None, None) for sub, part in self.parts.items()],
            ],
        )
        top = self.payload.__struct_fields__
        self.first_sub = len(top) - len(_SUBS)
        self.environment, self.flags = top.index("environment"), top.index("flags")
        self.strays = slice(self.environment + 1, self.first_sub)
        self.none_parts = [(None,) * len(self.parts[sub].__struct_fields__) for sub in _SUBS]
        energy, latency = (self.parts[s].__struct_fields__ for s in ("energy", "latency"))
        self.energy, self.latency_part = _SUBS.index("energy"), _SUBS.index("latency")
        self.gpu_energy = energy.index("gpu_energy") if self.energy_details else -1
        self.summaries = [latency.index(f"{m}_ms") for m in LATENCY_METRICS if self.latency]
        self.goodput = latency.index("goodput") if self.latency else -1
        layout: list[tuple[str, str]] = [
            *[("sql", n) for n in SQL_COLUMNS],
            *[("top", f) for f in top],
            *[(sub, f) for sub in _SUBS for f in self.parts[sub].__struct_fields__],
            *[("derived", n) for n in ("flags", *_ENERGY_DETAILS, *_LATENCY_CELLS)],
            *[("env", n) for n in _ENV_COLUMNS],
            ("const", "schema_version"),
        ]
        position = {label: i for i, label in enumerate(layout)}
        self.pick = picker([position[_source(n)] for n in columns])
        self.no_payload = (None,) * (len(layout) - len(SQL_COLUMNS) - 1)  # top ... env
        self.no_derived = (None,) * (len(_ENERGY_DETAILS) + len(_LATENCY_CELLS))


@functools.cache
def _layout(columns: tuple[str, ...]) -> _Layout:
    return _Layout(columns)


def _source(name: str) -> tuple[str, str]:
    if name in SQL_COLUMNS:
        return ("sql", name)
    if name in _DERIVED:
        return ("derived", name)
    if name in _ENV_COLUMNS:
        return ("env", name)
    if name == "schema_version":
        return ("const", name)
    return (_place(name), name)


def _types_of(kinds: tuple[Kind, ...]) -> frozenset[tuple[type, ...]]:
    """Every tuple of value types that ``kinds`` take as they are (None or the kind's type)."""
    return frozenset(itertools.product(*[(_PYTHON_TYPES[k], type(None)) for k in kinds]))


def _coerced(
    values: tuple[Any, ...], kinds: tuple[Kind, ...], as_they_are: frozenset[tuple[type, ...]]
) -> Values:
    """``coerce`` of each value (skipped where every value already has its kind's type)."""
    if tuple(map(type, values)) in as_they_are:
        return values
    return tuple(map(coerce, kinds, values))


_SQL_TYPES = _types_of(_SQL_KINDS)


class MeasuredReader:
    """Values of ``columns`` (of ``MEASURED_COLUMNS``; default all, in order) of stored
    measurements (``measured``), as ``generic_row.measurement_row`` gives them. Only the
    payload fields those columns read are decoded (checked), so a payload that the generic
    reading cannot read at all (it raises) may still give them."""

    def __init__(self, schema_version: int, columns: tuple[str, ...] = MEASURED_COLUMNS) -> None:
        self._layout = _layout(columns)
        self._decode: Callable[[bytes], Any] = msgspec.json.Decoder(self._layout.payload).decode
        self._tail = (schema_version,)
        self._no_payload = (*self._layout.no_payload, schema_version)  # top ... env, version
        self._environments: dict[bytes, Values | None] = {}

    def measured(self, experiment: Mapping[str, Any], m: tuple[Any, ...]) -> Values:
        """``m``: the SQL columns, then ``payload_json`` (bytes); ``experiment`` as
        ``generic_row.measurement_row`` takes it (for a payload read there)."""
        layout = self._layout
        sql = _coerced(m[:-1], _SQL_KINDS, _SQL_TYPES)
        payload = m[-1]
        values = self._typed(sql, payload) if payload else sql + self._no_payload
        if values is None:
            row = generic_row.measurement_row(
                experiment, {**dict(zip(SQL_COLUMNS, m, strict=False)), "payload_json": payload}
            )
            return tuple(row[n] for n in layout.columns)
        return layout.pick(values)

    def _typed(self, sql: Values, payload: bytes) -> Values | None:
        layout = self._layout
        try:
            p = self._decode(payload)
        except msgspec.ValidationError:
            return None
        top = _astuple(p)
        subs = top[layout.first_sub :]
        if subs.count(None) == len(subs):
            return None  # flat (schema ≤ 4): generic_row reads it
        strays = top[layout.strays]
        if strays.count(msgspec.UNSET) != len(strays):
            return None
        environment = self._environment(top[layout.environment])
        if environment is None:
            return None
        parts = [
            none if sub is None else _astuple(sub)
            for none, sub in zip(layout.none_parts, subs, strict=True)
        ]
        flags = top[layout.flags]
        derived = (
            self._derived(parts[layout.energy], parts[layout.latency_part])
            if layout.energy_details or layout.latency
            else layout.no_derived
        )
        joined = (";".join(flags) if flags else None,)
        return tuple(itertools.chain(sql, top, *parts, joined, derived, environment, self._tail))

    def _derived(self, energy: Values, latency: Values) -> Values:
        """Energy details, then the latency percentiles and goodput share (None where the
        layout reads neither)."""
        layout = self._layout
        cells: list[Any] = []
        if layout.energy_details:
            cells.extend(_energy_details(energy[layout.gpu_energy]))
        else:
            cells.extend((None,) * len(_ENERGY_DETAILS))
        if layout.latency:
            for i in layout.summaries:
                summary = latency[i]
                cells.extend(_NONE_SUMMARY if summary is None else _astuple(summary))
            goodput = latency[layout.goodput]
            cells.append(None if goodput is None else goodput.good_share)
        else:
            cells.extend((None,) * len(_LATENCY_CELLS))
        return tuple(cells)

    def _environment(self, raw: msgspec.Raw) -> Values | None:
        """The environment's columns; None where it is missing or empty."""
        key = bytes(raw)
        try:
            return self._environments[key]
        except KeyError:
            pass
        found = generic_row.environment({"environment": msgspec.json.decode(key) if key else None})
        values = tuple(coerce(KINDS[n], found.get(n)) for n in _ENV_COLUMNS) if found else None
        if len(self._environments) >= _ENV_CACHE_SIZE:
            self._environments.clear()
        self._environments[key] = values
        return values


def _energy_details(per_gpu: list[Any] | None) -> tuple[str | None, float | None]:
    if not per_gpu:
        return None, None
    idle = [g.idle_power_w for g in per_gpu]
    total = float(sum(idle)) if None not in idle else None
    return generic_row.distinct(g.method for g in per_gpu), total


# ---- an experiment's shared columns -------------------------------------------------


def _config_struct(name: str, leaves: dict[str, Kind]) -> type[msgspec.Struct]:
    """A struct of the config's leaves (dotted names) under one node; a "str" leaf is any
    JSON value (a struct, list or union is JSON text in its column)."""
    fields: list[tuple[str, Any]] = []
    children: dict[str, dict[str, Kind]] = {}
    for dotted, kind in leaves.items():
        head, _, rest = dotted.partition(".")
        if rest:
            children.setdefault(head, {})[rest] = kind
        else:
            fields.append((head, Any if kind == "str" else _TYPES[kind]))
    for head, below in children.items():
        fields.append((head, _config_struct(f"{name}_{head}", below) | None))
    return _struct(name, fields)


def _struct_in(annotation: Any) -> type[msgspec.Struct] | None:
    """The struct of an ``S | None`` field, None for a leaf."""
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return None


class _Node:
    """One struct of the config: its leaves, those of the struct itself first, then each
    nested struct's (walked)."""

    def __init__(self, struct: type[msgspec.Struct], prefix: str = "") -> None:
        fields = msgspec.structs.fields(struct)
        inner = [_struct_in(f.type) for f in fields]
        own = [i for i, t in enumerate(inner) if t is None]
        self.own = picker(own)
        self.nested = [
            (i, _Node(t, f"{prefix}{fields[i].name}.")) for i, t in enumerate(inner) if t
        ]
        self.leaves = [prefix + fields[i].name for i in own]
        for _, node in self.nested:
            self.leaves.extend(node.leaves)
        self.none = (None,) * len(self.leaves)

    def flatten(self, value: msgspec.Struct | None) -> Values:
        if value is None:
            return self.none
        values = _astuple(value)
        if not self.nested:
            return values
        flat = self.own(values)
        for i, node in self.nested:
            flat += node.flatten(values[i])
        return flat


_ConfigStruct = _config_struct("_Config", CONFIG_KINDS)
_CONFIG = _Node(_ConfigStruct)
_CONFIG_PICK = operator.itemgetter(*[_CONFIG.leaves.index(leaf) for leaf in CONFIG_KINDS])
_STR_AT = frozenset(i for i, kind in enumerate(CONFIG_KINDS.values()) if kind == "str")
_STR_LEAVES = picker(sorted(_STR_AT))
_TEXT_TYPES = frozenset({str, type(None)})
_LEAF = {leaf: i for i, leaf in enumerate(CONFIG_KINDS)}
_IDENTITY = ("campaign_id", "campaign_name", "experiment_id", "experiment_name")
_SETUP = ("model", "model_source", "dtype", "backend", "batch_size", "workload_mode")
_IDENTITY_KINDS: tuple[Kind, ...] = tuple(KINDS[n] for n in (*_IDENTITY, "experiment_position"))
_SETUP_KINDS: tuple[Kind, ...] = tuple(KINDS[n] for n in _SETUP)
_IDENTITY_TYPES, _SETUP_TYPES = _types_of(_IDENTITY_KINDS), _types_of(_SETUP_KINDS)
_SETUP_LEAVES = operator.itemgetter(
    *[_LEAF[f] for f in ("model.name", "model.path", "model.source", "model.dtype")],
    *[_LEAF[f] for f in ("backend", "batch_size", "workload.mode")],
)
_EXPECTED = (*_IDENTITY, "experiment_position", *_SETUP, *(f"config.{k}" for k in CONFIG_KINDS))
assert _EXPECTED == SHARED_COLUMNS
_decode_config: Callable[[str | bytes], Any] = msgspec.json.Decoder(_ConfigStruct).decode


def shared(experiment: Mapping[str, Any]) -> Values:
    """``SHARED_COLUMNS`` values of one experiment (its identity, ``config_json``), as
    ``generic_row.setup`` gives them."""
    try:
        config = _decode_config(experiment["config_json"])
    except msgspec.ValidationError:
        found = generic_row.setup(experiment)
        return tuple(coerce(KINDS[n], found[n]) for n in SHARED_COLUMNS)
    leaves: Values = _CONFIG_PICK(_CONFIG.flatten(config))
    name, path, source, dtype, backend, batch_size, mode = _SETUP_LEAVES(leaves)
    setup = (name or path, source, dtype, backend, batch_size, mode or "offline")
    if not _TEXT_TYPES.issuperset(map(type, _STR_LEAVES(leaves))):  # JSON text of the rest
        leaves = tuple(
            coerce("str", v) if i in _STR_AT and v is not None and type(v) is not str else v
            for i, v in enumerate(leaves)
        )
    identity = (*(experiment[n] for n in _IDENTITY), experiment["experiment_position"])
    return (
        *_coerced(identity, _IDENTITY_KINDS, _IDENTITY_TYPES),
        *_coerced(setup, _SETUP_KINDS, _SETUP_TYPES),
        *leaves,
    )
