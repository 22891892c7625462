"""Small JSON state files that several processes read and change: read without a lock
(each write replaces the file whole: temp file, fsync, rename), changed under an
exclusive ``flock`` on the file's folder, which leaves nothing behind.

Used by the GPU-settings ledger (``gpu_settings.py``) and the replayed NVML's settable
state (``nvml_replay_settings.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lem.protocol.errors import LemError


class NotARegularFile(LemError):
    """Something other than a regular file sits where the state file goes."""


def check_regular(path: Path) -> None:
    """Raise ``NotARegularFile`` when ``path`` exists and is not a regular file (a link, a
    folder, a FIFO): lem never replaces nor follows one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{path}: not a regular file; lem will not replace it")


def read_json(path: Path) -> Any:
    """The file's JSON value, or None when there is no file. OSError/ValueError if it is
    unreadable or not JSON; ``NotARegularFile`` if it is not a regular file."""
    check_regular(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


@contextlib.contextmanager
def folder_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s folder (made if missing) for a
    read-modify-write of ``path``; readers need none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically and durably (temp file in the
    same folder, fsync, rename, fsync of the folder); ``NotARegularFile`` if something
    else is there."""
    check_regular(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, indent=1, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(name, 0o644)  # mkstemp's 0600: a later lem under another user still reads it
        os.replace(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    _sync_folder(path.parent)


def remove(path: Path) -> None:
    """Delete ``path`` (a regular file) durably; nothing if it is gone already."""
    check_regular(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
