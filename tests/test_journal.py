"""The worker's fsync'd journal keeps every record; a torn last line is skipped."""

from __future__ import annotations

from pathlib import Path

import msgspec

from lem.protocol.journal import Journal, read_journal
from tests.test_protocol import MEASUREMENT


def test_append_then_read_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j" / "w1.jsonl")
    journal.append(MEASUREMENT)
    journal.append(msgspec.structs.replace(MEASUREMENT, cycle=3))
    journal.close()
    records = read_journal(tmp_path / "j" / "w1.jsonl")
    assert [r.cycle for r in records] == [2, 3]
    assert records[0] == MEASUREMENT


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    journal = Journal(path)
    journal.append(MEASUREMENT)
    journal.close()
    with path.open("ab") as f:
        f.write(msgspec.json.encode(MEASUREMENT)[:40])  # killed mid-write
    assert read_journal(path) == [MEASUREMENT]
    assert read_journal(tmp_path / "missing.jsonl") == []
