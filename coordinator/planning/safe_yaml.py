"""YAML from untrusted text within limits, and files read safely, for config files and
``--set`` values alike.

Limits are enforced on the event stream, before anything is composed into objects:
aliases (``MAX_ALIASES``), nesting depth counting what aliases bring in
(``MAX_DEPTH``), then the node count with every alias expanded
(``MAX_EXPANDED_NODES``); a mapping may not repeat a key; no string may hold a UTF-16
surrogate (YAML's ``"\\ud800"`` escape makes one, which no UTF-8 text can hold). Files
must be regular files (not a device, FIFO or folder) and are read to at most ``limit + 1``
bytes.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from lem.protocol.errors import BadInput

MAX_ALIASES = 64
MAX_DEPTH = 64
# Nodes a document may have once every alias is expanded (a "billion laughs" stays small
# as a graph of shared nodes but explodes wherever it is walked as a tree).
MAX_EXPANDED_NODES = 1_000_000
MERGE_KEY = "tag:yaml.org,2002:merge"
SURROGATE = re.compile("[\ud800-\udfff]")


class YamlProblem(BadInput):
    """Text or a file that is not YAML lem accepts; ``str(exc)`` is the problem, one line
    that names neither file nor field (``ConfigError`` and ``--set`` add them)."""


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    Devices (``/dev/zero``), FIFOs and folders are refused before opening; the read
    stops at ``limit + 1`` bytes whatever the size said. Raises ``YamlProblem``."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise YamlProblem(f"cannot read file: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise YamlProblem("not a regular file")
    if info.st_size > limit:
        raise YamlProblem(f"file is {info.st_size} bytes; the limit is {limit}")
    try:
        # O_NONBLOCK: should the path become a FIFO after the check, opening it won't hang
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise YamlProblem("not a regular file")
            data = file.read(limit + 1)
    except OSError as exc:
        raise YamlProblem(f"cannot read file: {exc.strerror}") from exc
    if len(data) > limit:
        raise YamlProblem(f"file is over {limit} bytes; the limit is {limit}")
    return data


def _check_events(text: str) -> None:
    """Aliases and depth (aliases included) from the event stream, stopping early."""
    aliases = 0
    heights: dict[str, int] = {}  # anchor -> height of its node (scalars 0)
    open_: list[tuple[str | None, int]] = []  # (anchor, tallest child so far) per collection
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        height = None
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append((event.anchor, 0))
            if len(open_) > MAX_DEPTH:
                raise YamlProblem(f"nested deeper than {MAX_DEPTH} levels{_line(event)}")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, tallest = open_.pop()
            height = tallest + 1
        elif isinstance(event, yaml.ScalarEvent):
            anchor, height = event.anchor, 0
            if SURROGATE.search(event.value):
                raise YamlProblem(
                    f"a UTF-16 surrogate escape (\\ud800-\\udfff){_line(event)}: write the "
                    "character itself, or \\U0001F600-style escapes"
                )
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlProblem(f"over {MAX_ALIASES} YAML aliases; the limit is {MAX_ALIASES}")
            if event.anchor not in heights:
                recursive = any(name == event.anchor for name, _ in open_)
                what = "inside its own anchor" if recursive else "to no anchor defined before it"
                raise YamlProblem(f"the alias *{event.anchor} is {what}{_line(event)}")
            anchor, height = None, heights[event.anchor]
        else:
            continue
        if anchor is not None:
            heights[anchor] = height
        if len(open_) + height > MAX_DEPTH:
            raise YamlProblem(
                f"nested deeper than {MAX_DEPTH} levels (aliases expanded){_line(event)}"
            )
        if open_:
            parent, tallest = open_[-1]
            open_[-1] = (parent, max(tallest, height))


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" at line {mark.line + 1}" if mark is not None else ""


def _check_nodes(root: yaml.Node) -> None:
    """Duplicate keys, and the node count with every alias expanded (depth is bounded by
    ``_check_events``, so the recursion is too)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != MERGE_KEY:
                    name = (k.tag, k.value)
                    if name in seen:
                        raise YamlProblem(
                            f"duplicate key {k.value!r} at line {k.start_mark.line + 1} "
                            f"(first at line {seen[name]})"
                        )
                    seen[name] = k.start_mark.line + 1
                total += size(k) + size(v)
        sizes[key] = total
        return total

    expanded = size(root)
    if expanded > MAX_EXPANDED_NODES:
        raise YamlProblem(
            f"YAML aliases expand to {expanded} nodes; the limit is {MAX_EXPANDED_NODES}"
        )


def load_yaml(text: str) -> Any:
    """One YAML document from ``text`` within the limits; raises ``YamlProblem``."""
    try:
        _check_events(text)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node)
            try:
                return loader.construct_document(node)
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                # PyYAML's constructors fail so on a scalar its explicit tag cannot read
                # (``!!timestamp nope``, ``!!bool maybe``, ``!!int 0x``)
                raise YamlProblem(
                    f"invalid YAML: a value its tag cannot make ({type(exc).__name__}: {exc})"
                ) from exc
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(f"invalid YAML{where}: {problem}") from exc
