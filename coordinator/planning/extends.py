"""``_extends``: a campaign file built on other YAML files, with where every value came from.

A file's top-level ``_extends`` names one file or a list of files, each relative to the
file that names it. They are read first (a list in order, each later one winning), then
the file itself is merged over them:

- mappings merge key by key, deeply;
- lists and scalars replace (a list is never concatenated);
- the including file wins over everything it extends.

Every extended file's real path (symlinks resolved) must lie inside the campaign file's
directory tree; a file that extends itself through any chain is an error naming the chain.
Each file is read through ``read_yaml_mapping`` (size and alias limits before parsing).
"""

from __future__ import annotations

import errno
import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lem.coordinator.planning.config_loader import MAX_FILE_BYTES, ConfigError, read_yaml_mapping
from lem.coordinator.planning.safe_yaml import read_regular_file

EXTENDS_KEY = "_extends"
MAX_EXTENDED_FILES = 64

# A value's location in the merged document, as a tuple of mapping keys.
KeyPath = tuple[str, ...]


@dataclass
class MergedDocument:
    """The merged mapping, which file set each leaf (``(key, ...)`` → file label), and a
    hash over every file read, in reading order."""

    data: dict[str, Any]
    sources: dict[KeyPath, str]
    files: list[Path] = field(default_factory=list)

    @property
    def source_hash(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(read_regular_file(path, MAX_FILE_BYTES))  # as checked when read
        return digest.hexdigest()[:16]


def leaf_paths(value: Any, prefix: KeyPath) -> list[KeyPath]:
    """Every leaf under ``value`` (a non-empty mapping recurses; anything else is a leaf)."""
    if isinstance(value, dict) and value:
        paths: list[KeyPath] = []
        for key, child in value.items():
            paths.extend(leaf_paths(child, (*prefix, str(key))))
        return paths
    return [prefix]


def merge_over(
    base: dict[str, Any],
    base_sources: dict[KeyPath, str],
    over: dict[str, Any],
    over_sources: dict[KeyPath, str],
    prefix: KeyPath = (),
) -> None:
    """Merge ``over`` into ``base`` in place (mappings deeply; lists and scalars replace),
    and its sources into ``base_sources``."""
    for key, value in over.items():
        path = (*prefix, str(key))
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merge_over(current, base_sources, value, over_sources, path)
            continue
        for stale in [p for p in base_sources if p[: len(path)] == path]:
            del base_sources[stale]
        base[key] = value
        for leaf in leaf_paths(value, path):
            base_sources[leaf] = over_sources.get(leaf, over_sources.get(path, ""))


class _Reader:
    """Reads one campaign file and everything it extends, checking the tree and cycles."""

    def __init__(self, campaign_path: Path) -> None:
        self.campaign_path = campaign_path
        self.root = resolved(campaign_path, campaign_path, None).parent
        self.files: list[Path] = []

    def label(self, real: Path) -> str:
        """How provenance names a file: the campaign file as given, others by their path
        relative to the campaign file's directory."""
        if real == self.campaign_path.resolve():
            return str(self.campaign_path)
        return str(real.relative_to(self.root))

    def read(self, path: Path, real: Path, chain: list[Path]) -> MergedDocument:
        if len(self.files) >= MAX_EXTENDED_FILES:
            raise ConfigError(path, EXTENDS_KEY, f"more than {MAX_EXTENDED_FILES} files read")
        raw = read_yaml_mapping(path)
        self.files.append(real)
        targets = _extends_targets(raw.pop(EXTENDS_KEY, None), path)
        merged = MergedDocument({}, {})
        for target in targets:
            target_path = path.parent / target
            where = f"{EXTENDS_KEY} {_shown(target)}"
            target_real = resolved(target_path, path, where)
            if not target_real.is_relative_to(self.root):
                raise ConfigError(
                    path, where, f"resolves outside the campaign's directory {self.root}"
                )
            if target_real in chain:
                names = " -> ".join(self.label(p) for p in [*chain, target_real])
                raise ConfigError(path, EXTENDS_KEY, f"cycle: {names}")
            problem = _file_problem(target_real)  # a FIFO or device would hang or never end
            if problem is not None:
                raise ConfigError(path, where, problem)
            part = self.read(target_path, target_real, [*chain, target_real])
            merge_over(merged.data, merged.sources, part.data, part.sources)
        own = {leaf: self.label(real) for leaf in leaf_paths(raw, ())}
        merge_over(merged.data, merged.sources, raw, own)
        return merged


def resolved(path: Path, named_in: Path, field: str | None) -> Path:
    """``path`` with every symlink resolved. A loop, a NUL byte or an over-long name is a
    ``ConfigError`` of the file that names it (``field``), not a traceback."""
    try:
        return path.resolve()
    except RuntimeError:  # Python 3.11 reports a symlink loop so
        raise ConfigError(named_in, field, "cannot read file: a symlink loop") from None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(named_in, field, f"cannot read file: {reason}") from None


def _file_problem(real: Path) -> str | None:
    """Why ``real`` cannot be extended (missing, not a regular file, unreadable), or None."""
    try:
        info = real.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return f"cannot read file: {exc.strerror}"
    return None if stat.S_ISREG(info.st_mode) else "not a regular file"


def _shown(target: str, limit: int = 80) -> str:
    """``target`` as an error names it: quoted, escaped, cut to ``limit`` characters."""
    return repr(target if len(target) <= limit else target[:limit] + "…")


def _extends_targets(value: Any, path: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(path, EXTENDS_KEY, "must be a file name or a list of file names")


def read_with_extends(campaign_path: Path) -> MergedDocument:
    """The campaign file merged over everything it extends, with per-leaf sources.

    Raises ``ConfigError`` (one line, naming the file that holds the bad ``_extends``)."""
    real = resolved(campaign_path, campaign_path, None)
    reader = _Reader(campaign_path)
    document = reader.read(campaign_path, real, [real])
    document.files = reader.files
    return document
