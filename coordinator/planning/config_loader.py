"""YAML files into validated msgspec configs, with one-line errors naming file and field.

Size and alias limits are enforced before YAML is parsed into objects. Unknown keys,
wrong types and impossible values raise ``ConfigError``; the CLI prints its one line and
exits with status 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from lem.protocol.config import ExperimentConfig, config_problems
from lem.protocol.errors import BadInput

MAX_FILE_BYTES = 1 << 20
MAX_ALIASES = 64
# Nodes a document may have once every alias is expanded (a "billion laughs" stays small
# as a graph of shared nodes but explodes wherever it is walked as a tree).
MAX_EXPANDED_NODES = 1_000_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Node count of ``node`` with every alias expanded, from the composed graph (each node
    counted once per reference, computed once per node; recursive anchors count once)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a node that contains itself counts once
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = size
    return size


class ConfigError(BadInput):
    """A configuration problem: ``file: field: problem``."""

    def __init__(self, path: Path | str, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + problem)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse ``path`` as YAML whose top level is a mapping, within size and alias limits."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read file: {exc.strerror}") from exc
    if size > MAX_FILE_BYTES:
        raise ConfigError(path, None, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read file as UTF-8 text: {exc}") from exc
    try:
        aliases = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            aliases += isinstance(event, yaml.AliasEvent)
            if aliases > MAX_ALIASES:
                raise ConfigError(
                    path, None, f"over {MAX_ALIASES} YAML aliases; the limit is {MAX_ALIASES}"
                )
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                expanded = _expanded_size(node, {})
                if expanded > MAX_EXPANDED_NODES:
                    raise ConfigError(
                        path,
                        None,
                        f"YAML aliases expand to {expanded} nodes; the limit is "
                        f"{MAX_EXPANDED_NODES}",
                    )
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, None, f"invalid YAML{where}: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"the top level must be a mapping, not {type(data).__name__}")
    return data


_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")


def _split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """('field.path', 'problem') from msgspec's 'Expected … - at `$.a.b`' message."""
    match = _AT_PATH.match(str(exc))
    assert match is not None
    message, path = match.group("msg"), (match.group("path") or "")
    path = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    unknown = _UNKNOWN.match(message)
    if unknown:
        name = unknown.group("name")
        return (f"{path}.{name}" if path else name), "unknown field"
    return path, message.replace("`", "'").rstrip(".").lower()


def experiment_from_mapping(data: dict[str, Any], path: Path, prefix: str = "") -> ExperimentConfig:
    """Validate one experiment mapping; field names in errors get ``prefix``."""
    try:
        config = msgspec.convert(data, ExperimentConfig, strict=True)
    except msgspec.ValidationError as exc:
        field, problem = _split_validation_error(exc)
        raise ConfigError(
            path, prefix + field if field else prefix.rstrip(".") or None, problem
        ) from exc
    problems = config_problems(config)
    if problems:
        field, problem = problems[0]
        raise ConfigError(path, prefix + field, problem)
    return config


def load_experiment(path: Path) -> ExperimentConfig:
    """Read one experiment file (the top level is an experiment)."""
    return experiment_from_mapping(read_yaml_mapping(path), path)


def struct_field_names(struct_type: type) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct_type)]


def check_dotted_path(dotted: str, path: Path, where: str) -> None:
    """Fail unless ``dotted`` names a field of ExperimentConfig (e.g. ``model.dtype``)."""
    struct_type: Any = ExperimentConfig
    walked: list[str] = []
    for part in dotted.split("."):
        fields = {f.name: f for f in msgspec.structs.fields(struct_type)}
        if part not in fields:
            known = ", ".join(sorted(fields))
            owner = ".".join(walked) or "an experiment"
            raise ConfigError(path, where, f"'{part}' is not a field of {owner} (known: {known})")
        walked.append(part)
        field_type = fields[part].type
        struct_type = (
            field_type
            if isinstance(field_type, type) and issubclass(field_type, msgspec.Struct)
            else None
        )
        if struct_type is None and part != dotted.split(".")[-1]:
            raise ConfigError(path, where, f"'{'.'.join(walked)}' has no sub-fields")
