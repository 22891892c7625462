"""``write_export`` to a symlink, a FIFO or a character device: written through, never replaced."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import pytest

from lem.coordinator.results.export import ExportError, write_export


def export(output: Path) -> None:
    write_export([], "measurement", "csv", str(output), io.StringIO())


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    export(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().startswith("campaign_id,") and real.is_file()


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "new.csv")
    export(link)
    assert link.is_symlink() and (tmp_path / "new.csv").read_text().startswith("campaign_id,")


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    export(fifo)
    reader.join(10)
    assert fifo.is_fifo() and got and got[0].startswith(b"campaign_id,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def char_device(path: Path, minor: int) -> Path:
    """A node of the memory devices (1, minor) in a test folder, never one in /dev."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


def test_a_character_device_is_written_into_not_replaced(tmp_path: Path) -> None:
    null = char_device(tmp_path / "null", 3)
    export(null)
    assert null.is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_full_device_is_one_error_and_stays_a_device(tmp_path: Path) -> None:
    full = char_device(tmp_path / "full", 7)
    with pytest.raises(ExportError, match="full"):
        export(full)
    assert full.is_char_device()
