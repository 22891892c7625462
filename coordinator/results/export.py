"""Result tables to files (CSV, JSON, Parquet) and to pandas DataFrames.

CSV and JSON need nothing beyond lem; Parquet and DataFrames need the ``analysis`` extra
(pandas, pyarrow), imported only when asked for. A regular file is written whole or not at
all: into a temporary file beside the target, renamed over it at the end. A symlink is
followed to its final target, which gets the same treatment (the link stays a link; a
dangling link's target is created). A character device or a FIFO is written into, never
replaced; any other kind of file (socket, block device) is refused.

Formats: CSV has a header row of the column names; null is an empty field, booleans are
``true``/``false`` and floats are written with every digit (they read back exactly). JSON is
one array of objects, one per row, null as ``null``. Parquet holds the DataFrame that
``lem.load_results`` returns (nullable pandas dtypes: ``string``, ``Int64``, ``Float64``,
``boolean``).

What is exported is a ``ResultSet`` (table.py), read and written one experiment at a time
(formats.py: the same bytes, made faster), or a sequence of rows (dicts), written row by row
as lem always wrote them.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeAlias, cast

import msgspec

from lem.coordinator.results import formats
from lem.coordinator.results.columns import KINDS, Level, columns
from lem.coordinator.results.table import ResultSet, full_row
from lem.protocol.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd

Format = Literal["csv", "json", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "json", "parquet")
PANDAS_DTYPES = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}
MISSING_EXTRA = (
    "{what} needs pandas and pyarrow (the 'analysis' extra): pip install 'lem[analysis]'"
)


class ExportError(BadInput):
    """The export cannot be written (bad format, unwritable path, missing extra)."""


class MissingExtraError(ExportError, ImportError):
    """pandas or pyarrow is not installed (``pip install 'lem[analysis]'``)."""


def pandas_dtypes(level: Level) -> dict[str, str]:
    """Column → pandas dtype of one level (nullable dtypes: null stays null, never 0)."""
    return {name: PANDAS_DTYPES[KINDS[name]] for name in columns(level)}


def _pandas(what: str) -> Any:
    try:
        import pandas
    except ImportError:
        raise MissingExtraError(MISSING_EXTRA.format(what=what)) from None
    return pandas


# ---- what is exported: a result set read one experiment at a time, or rows -----------

Source: TypeAlias = ResultSet | Sequence[Mapping[str, Any]]


def dataframe(source: Source, level: Level) -> pd.DataFrame:
    """The rows of one level as a DataFrame with exactly that level's columns, in order."""
    pd = _pandas("a DataFrame")
    if isinstance(source, ResultSet):
        try:
            return formats.frame(source, level, pd)
        except ImportError:  # pandas without pyarrow: row by row
            source = [
                _as_row(shared, own, level) for shared, g in source.groups(level) for own in g
            ]
    names = list(columns(level))
    frame = pd.DataFrame.from_records(list(source), columns=names)
    return frame.astype(pandas_dtypes(level))


def _as_row(shared: tuple[Any, ...], own: tuple[Any, ...], level: Level) -> dict[str, Any]:
    return dict(zip(columns(level), full_row(level)(shared + own), strict=True))


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else value


def _write_csv(source: Source, level: Level, out: IO[str]) -> int:
    if isinstance(source, ResultSet):
        return formats.write_csv(source, level, out)
    writer = csv.writer(out, lineterminator="\n")
    names = list(columns(level))
    writer.writerow(names)
    for row in source:
        writer.writerow([_csv_cell(row[name]) for name in names])
    return len(source)


def _write_json(source: Source, level: Level, write: Callable[[bytes], object]) -> int:
    if isinstance(source, ResultSet):
        return formats.write_json(source, level, write)
    names = list(columns(level))
    write(msgspec.json.encode([{n: row[n] for n in names} for row in source]))
    write(b"\n")
    return len(source)


def _write_parquet(source: Source, level: Level, path: Path) -> int:
    frame = dataframe(source, level)
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError:
        raise MissingExtraError(MISSING_EXTRA.format(what="Parquet export")) from None
    frame.to_parquet(path, engine="pyarrow", index=False)
    return len(frame)


def format_of(output: str, fmt: str | None) -> Format:
    """The export format: ``fmt`` if given, else from the output's suffix, else CSV."""
    chosen = fmt or (Path(output).suffix.lstrip(".").lower() if output != "-" else "") or "csv"
    if chosen not in FORMATS:
        raise ExportError(
            f"unknown export format {chosen!r} (choose one of {', '.join(FORMATS)}, or --format)"
        )
    return cast(Format, chosen)


def write_export(source: Source, level: Level, fmt: Format, output: str, stdout: IO[str]) -> int:
    """Write the rows of ``source`` (a ``ResultSet``, read as it is written, or rows) to
    ``output`` (a path, or ``-`` for ``stdout``: CSV and JSON only); return how many.

    The file appears whole or not at all; ``ExportError`` says why it cannot be written.
    """
    if fmt == "parquet":
        _pandas("Parquet export")  # before anything is created
    if output == "-":
        if fmt == "parquet":
            raise ExportError("Parquet is binary: give a file with -o, not stdout")
        # Nothing reaches stdout unless all of it can.
        if fmt == "csv":
            buffer = io.StringIO()
            count = _write_csv(source, level, buffer)
            stdout.write(buffer.getvalue())
        else:
            encoded = io.BytesIO()
            count = _write_json(source, level, encoded.write)
            stdout.write(encoded.getvalue().decode())
        return count
    target = Path(os.path.realpath(output))  # through symlinks: a link stays a link
    shown = Path(output)
    try:
        mode: int | None = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ExportError(f"{shown}: cannot write here: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise ExportError(f"{shown}: is a folder; give a file name with -o")
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return _write_into(shown, target, fmt, lambda path: _write_to(path, source, level, fmt))
    if mode is not None and not stat.S_ISREG(mode):
        raise ExportError(f"{shown}: not a regular file, character device or FIFO: refused")
    if not target.parent.is_dir():
        raise ExportError(f"{shown}: folder {target.parent} does not exist")
    return _atomic_write(target, fmt, lambda path: _write_to(path, source, level, fmt))


def _write_into(shown: Path, target: Path, fmt: Format, write: Callable[[Path], int]) -> int:
    """Write into a character device or FIFO (opened without creating or replacing it)."""
    with tempfile.TemporaryDirectory(prefix="lem-export-") as folder:
        staged = Path(folder) / f"export.{fmt}"
        count = write(staged)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NOCTTY)
            with os.fdopen(fd, "wb") as out, staged.open("rb") as source:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise ExportError(f"{shown}: cannot write {fmt}: {exc.strerror or exc}") from None
    return count


def _write_to(path: Path, source: Source, level: Level, fmt: Format) -> int:
    if fmt == "parquet":
        return _write_parquet(source, level, path)
    if fmt == "json":
        with path.open("wb") as encoded:
            return _write_json(source, level, encoded.write)
    with path.open("w", encoding="utf-8", newline="") as out:
        return _write_csv(source, level, out)


def _atomic_write(target: Path, fmt: Format, write: Callable[[Path], int]) -> int:
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write here: {exc.strerror or exc}") from None
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    try:
        count = write(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write {fmt}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return count
