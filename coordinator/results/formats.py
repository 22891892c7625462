"""A ``ResultSet`` as CSV, JSON or a DataFrame, made one experiment at a time.

The text is byte for byte what the row-by-row writers of export.py make of the same rows
(csv module, ``msgspec.json.encode`` of the list of row objects), made faster:

- an experiment's shared cells (identity, setup, config) are made into text once, not once
  per row; a row is its runs of shared and own cells joined by the separator;
- CSV floats: the csv module writes a float as its ``repr``; msgspec writes the same
  shortest round-trip digits many times faster, but in another notation below 1e-4 and in
  exponents (``1e16`` for ``1e+16``), so its text is taken only where it has neither
  (``float_texts``), the ``repr`` elsewhere;
- a DataFrame is built column-wise through Arrow, a few thousand rows at a time.

Memory stays that of one experiment (CSV, JSON) or of the table's columns (DataFrame).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple, cast

import msgspec

from lem.coordinator.results.columns import KINDS, SHARED_COLUMNS, Level, columns
from lem.coordinator.results.table import ResultSet, own_columns
from lem.coordinator.results.typed_row import Values, picker

if TYPE_CHECKING:
    import pandas as pd

_CHUNK_ROWS = 4096  # rows per Arrow record batch
_encode = msgspec.json.encode


class _Segment(NamedTuple):
    """A run of a level's columns that are all shared or all own: [start, stop) of those."""

    shared: bool
    start: int
    stop: int


def _segments(level: Level) -> list[_Segment]:
    found: list[_Segment] = []
    at = {True: 0, False: 0}
    for name in columns(level):
        is_shared = name in SHARED_COLUMNS
        if found and found[-1].shared == is_shared:
            found[-1] = found[-1]._replace(stop=found[-1].stop + 1)
        else:
            found.append(_Segment(is_shared, at[is_shared], at[is_shared] + 1))
        at[is_shared] += 1
    return found


# ---- CSV --------------------------------------------------------------------------


class _Echo:
    """A "file" whose ``write`` returns what it is given: ``csv.writer(_Echo()).writerow``
    returns the row's CSV line."""

    write = str


class _CsvTexts:
    """The CSV text of each value of some columns, in their order, as the csv module writes
    a field of a row (``lineterminator="\\n"``; see export.py's ``_csv_cell``): None empty,
    booleans ``true``/``false``, ints and floats as their ``str``/``repr`` (``float_texts``),
    strings quoted where needed — by the csv module itself, once per distinct string."""

    def __init__(self, names: Sequence[str], strings: dict[str | None, str]) -> None:
        by_kind: dict[str, list[int]] = {"float": [], "str": [], "int": [], "bool": []}
        for i, name in enumerate(names):
            by_kind[KINDS[name]].append(i)
        self.floats, self.strs, self.ints, self.bools = (
            picker(by_kind[k]) for k in ("float", "str", "int", "bool")
        )
        taken = [i for kind in ("float", "str", "int", "bool") for i in by_kind[kind]]
        self.order = picker([taken.index(i) for i in range(len(names))])
        self.strings = strings
        self.line: Callable[[Sequence[Any]], str] = csv.writer(
            _Echo(), lineterminator="\n"
        ).writerow

    def __call__(self, values: Sequence[Any]) -> tuple[str, ...]:
        texts = float_texts(self.floats(values))
        strs = self.strs(values)
        string_texts = list(map(self.strings.get, strs))
        if None in string_texts:  # not seen yet
            string_texts = [
                self._string(v) if t is None else t for v, t in zip(strs, string_texts, strict=True)
            ]
        texts += cast("list[str]", string_texts)
        ints = self.ints(values)
        texts += ["" if v is None else str(v) for v in ints] if None in ints else map(str, ints)
        texts += map(_BOOL_TEXT.__getitem__, self.bools(values))
        return self.order(texts)

    def _string(self, value: str) -> str:
        if len(self.strings) >= _STRINGS_KEPT:
            self.strings.clear()
            self.strings[None] = ""
        text = self.strings[value] = self.line((value, None))[:-2]  # "text,\n"
        return text


_STRINGS_KEPT = 1 << 16  # distinct strings whose CSV text is kept
_BOOL_TEXT = {None: "", True: "true", False: "false"}


def float_texts(values: Sequence[float | None]) -> list[str]:
    """The ``repr`` of each float, "" for None: what the csv module writes. msgspec gives the
    same shortest round-trip digits, in another notation (``1e16``, ``0.00001``) where the
    text has an ``e`` or ``0.0000``: those are read back and written by ``repr``."""
    if not values:
        return []
    text = _encode(values).decode()[1:-1]
    if text.count("null") != values.count(None):  # inf or nan (written null)
        return ["" if v is None else repr(v) for v in values]
    text = text.replace("null", "")
    texts = text.split(",")
    for notation in ("e", "0.0000"):
        at = text.find(notation)
        while at != -1:
            token = text.count(",", 0, at)
            texts[token] = repr(float(texts[token]))  # the same float (round trip)
            at = text.find(",", at)
            at = -1 if at == -1 else text.find(notation, at)
    return texts


def write_csv(results: ResultSet, level: Level, out: IO[str]) -> int:
    """The level's CSV (header, then one line per row); the rows written."""
    names = list(columns(level))
    csv.writer(out, lineterminator="\n").writerow(names)
    segments = _segments(level)
    strings: dict[str | None, str] = {None: ""}
    texts = {
        True: _CsvTexts(SHARED_COLUMNS, strings),
        False: _CsvTexts(own_columns(level), strings),
    }
    count = 0
    for shared, group in results.groups(level):
        shared_texts = texts[True](shared)
        fixed = {s: ",".join(shared_texts[s.start : s.stop]) for s in segments if s.shared}
        lines = []
        for own in group:
            own_texts = texts[False](own)
            lines.append(
                ",".join(
                    fixed[s] if s.shared else ",".join(own_texts[s.start : s.stop])
                    for s in segments
                )
            )
        if lines:
            out.write("\n".join(lines))
            out.write("\n")
        count += len(lines)
    return count


# ---- JSON -------------------------------------------------------------------------


def write_json(results: ResultSet, level: Level, write: Callable[[bytes], object]) -> int:
    """The level's rows as one JSON array of objects (UTF-8); the rows written. A run of
    columns is encoded as a struct whose fields are named as they are."""
    segments = _segments(level)
    keys = {True: SHARED_COLUMNS, False: own_columns(level)}
    structs = {s: _struct_of(keys[s.shared][s.start : s.stop]) for s in segments}
    count = 0

    def members(values: Sequence[Any], segment: _Segment) -> bytes:
        return _encode(structs[segment](*values[segment.start : segment.stop]))[1:-1]

    write(b"[")
    for shared, group in results.groups(level):
        fixed = {s: members(shared, s) for s in segments if s.shared}
        rows = [
            b"{" + b",".join(fixed[s] if s.shared else members(own, s) for s in segments) + b"}"
            for own in group
        ]
        if rows:
            write((b"," if count else b"") + b",".join(rows))
        count += len(rows)
    write(b"]\n")
    return count


def _struct_of(names: Sequence[str]) -> type[msgspec.Struct]:
    """A struct encoded as the object of these members (in this order)."""
    fields = [f"f{i}" for i in range(len(names))]
    return msgspec.defstruct("_Columns", fields, rename=dict(zip(fields, names, strict=True)))


# ---- DataFrame --------------------------------------------------------------------


def frame(results: ResultSet, level: Level, pd: Any) -> pd.DataFrame:
    """The level's rows as a DataFrame of nullable dtypes (``string``, ``Int64``,
    ``Float64``, ``boolean``), built through Arrow a few thousand rows at a time: each own
    column from its rows' values, each shared column from its experiments' values, repeated
    over their rows."""
    import numpy
    import pyarrow as pa

    arrow = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    names = columns(level)
    schema = pa.schema([(name, arrow[KINDS[name]]) for name in names])
    own_names = own_columns(level)
    where = [(name in SHARED_COLUMNS, i) for name, i in _positions(level).items()]
    batches = []
    for shared, counts, own in _chunks(results, level):
        shared_arrays = [
            pa.array(values, type=arrow[KINDS[name]])
            for name, values in zip(SHARED_COLUMNS, zip(*shared, strict=True), strict=True)
        ]
        if any(n != 1 for n in counts):
            rows_of = pa.array(numpy.repeat(numpy.arange(len(counts)), counts))
            shared_arrays = [a.take(rows_of) for a in shared_arrays]
        own_arrays = [
            pa.array(values, type=arrow[KINDS[name]])
            for name, values in zip(own_names, zip(*own, strict=True), strict=True)
        ]
        arrays = [(shared_arrays if in_shared else own_arrays)[i] for in_shared, i in where]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    nullable = {
        pa.string(): pd.StringDtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    table = pa.Table.from_batches(batches, schema=schema)
    return table.to_pandas(types_mapper=nullable.get)


def _positions(level: Level) -> dict[str, int]:
    """Each column of the level: its place among the shared or among the own columns."""
    own = own_columns(level)
    return {
        n: SHARED_COLUMNS.index(n) if n in SHARED_COLUMNS else own.index(n) for n in columns(level)
    }


def _chunks(
    results: ResultSet, level: Level
) -> Iterator[tuple[list[Values], list[int], list[Values]]]:
    """A few thousand rows at a time: their experiments' shared values, how many rows each
    has, and the rows' own values."""
    shared: list[Values] = []
    counts: list[int] = []
    own: list[Values] = []
    for values, group in results.groups(level):
        if not group:
            continue
        shared.append(values)
        counts.append(len(group))
        own.extend(group)
        if len(own) >= _CHUNK_ROWS:
            yield shared, counts, own
            shared, counts, own = [], [], []
    if own:
        yield shared, counts, own
