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
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import msgspec

from lem.coordinator.results.columns import KINDS, Level, columns
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


def dataframe(rows: Sequence[dict[str, Any]], level: Level) -> pd.DataFrame:
    """The rows of one level as a DataFrame with exactly that level's columns, in order."""
    pd = _pandas("a DataFrame")
    names = list(columns(level))
    frame = pd.DataFrame.from_records(list(rows), columns=names)
    return frame.astype(pandas_dtypes(level))


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else value


def _write_csv(rows: Sequence[dict[str, Any]], level: Level, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    names = list(columns(level))
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in names])


def _write_json(rows: Sequence[dict[str, Any]], level: Level, out: IO[str]) -> None:
    names = list(columns(level))
    out.write(msgspec.json.encode([{n: row[n] for n in names} for row in rows]).decode())
    out.write("\n")


def _write_parquet(rows: Sequence[dict[str, Any]], level: Level, path: Path) -> None:
    frame = dataframe(rows, level)
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError:
        raise MissingExtraError(MISSING_EXTRA.format(what="Parquet export")) from None
    frame.to_parquet(path, engine="pyarrow", index=False)


def format_of(output: str, fmt: str | None) -> Format:
    """The export format: ``fmt`` if given, else from the output's suffix, else CSV."""
    chosen = fmt or (Path(output).suffix.lstrip(".").lower() if output != "-" else "") or "csv"
    if chosen not in FORMATS:
        raise ExportError(
            f"unknown export format {chosen!r} (choose one of {', '.join(FORMATS)}, or --format)"
        )
    return cast(Format, chosen)


def write_export(
    rows: Sequence[dict[str, Any]], level: Level, fmt: Format, output: str, stdout: IO[str]
) -> None:
    """Write ``rows`` to ``output`` (a path, or ``-`` for ``stdout``: CSV and JSON only).

    The file appears whole or not at all; ``ExportError`` says why it cannot be written.
    """
    if fmt == "parquet":
        _pandas("Parquet export")  # before anything is created
    if output == "-":
        if fmt == "parquet":
            raise ExportError("Parquet is binary: give a file with -o, not stdout")
        buffer = io.StringIO()
        (_write_csv if fmt == "csv" else _write_json)(rows, level, buffer)
        stdout.write(buffer.getvalue())
        return
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
        _write_into(shown, target, fmt, lambda path: _write_to(path, rows, level, fmt))
        return
    if mode is not None and not stat.S_ISREG(mode):
        raise ExportError(f"{shown}: not a regular file, character device or FIFO: refused")
    if not target.parent.is_dir():
        raise ExportError(f"{shown}: folder {target.parent} does not exist")
    _atomic_write(target, fmt, lambda path: _write_to(path, rows, level, fmt))


def _write_into(shown: Path, target: Path, fmt: Format, write: Callable[[Path], None]) -> None:
    """Write into a character device or FIFO (opened without creating or replacing it)."""
    with tempfile.TemporaryDirectory(prefix="lem-export-") as folder:
        staged = Path(folder) / f"export.{fmt}"
        write(staged)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NOCTTY)
            with os.fdopen(fd, "wb") as out, staged.open("rb") as source:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise ExportError(f"{shown}: cannot write {fmt}: {exc.strerror or exc}") from None


def _write_to(path: Path, rows: Sequence[dict[str, Any]], level: Level, fmt: Format) -> None:
    if fmt == "parquet":
        _write_parquet(rows, level, path)
        return
    with path.open("w", encoding="utf-8", newline="") as out:
        (_write_csv if fmt == "csv" else _write_json)(rows, level, out)


def _atomic_write(target: Path, fmt: Format, write: Callable[[Path], None]) -> None:
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
        write(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write {fmt}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
