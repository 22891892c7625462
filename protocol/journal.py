"""Worker-side checkpoint journal: every finished measurement is made durable here first.

One JSON object per line, appended, flushed and fsync'd before the result is reported to
the coordinator, so a coordinator crash loses nothing. A torn last line (the worker was
killed mid-write) is skipped when reading.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from lem.protocol.result_payload import decode_measurement
from lem.protocol.results import Measurement

_encoder = msgspec.json.Encoder()


class Journal:
    """Append-only, fsync'd file of ``Measurement`` records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # Make the file's directory entry durable too.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def append(self, measurement: Measurement) -> None:
        line = _encoder.encode(measurement) + b"\n"
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def read_journal(path: Path) -> list[Measurement]:
    """All complete records of a journal; a torn or corrupt line is skipped. A line
    written by an older worker (a flat Measurement, protocol ≤ 2) is read as it was."""
    records: list[Measurement] = []
    if not path.exists():
        return records
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            records.append(decode_measurement(raw))
        except msgspec.DecodeError:
            continue
    return records
