"""YAML files into validated msgspec configs, with one-line errors naming file and field.

Files are read and YAML parsed within limits (``safe_yaml``: a regular file, size,
aliases, depth, duplicate keys) before YAML becomes objects. Unknown keys,
wrong types and impossible values raise ``ConfigError``; the CLI prints its one line and
exits with status 2.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.planning.safe_yaml import (
    YamlProblem,
    load_yaml,
    read_regular_file,
)
from lem.protocol.config import ExperimentConfig, config_problems
from lem.protocol.errors import BadInput

MAX_FILE_BYTES = 1 << 20


class ConfigError(BadInput):
    """A configuration problem: ``file: field: problem``."""

    def __init__(self, path: Path | str, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + problem)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse ``path`` as YAML whose top level is a mapping: a regular file within the size
    limit, YAML within the limits of ``safe_yaml`` (aliases, depth, no duplicate keys)."""
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlProblem(f"cannot read file as UTF-8 text: {exc}") from exc
        data = load_yaml(text)
    except YamlProblem as exc:
        raise ConfigError(path, None, str(exc)) from exc
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
    return path, problem_text(ExperimentConfig, path, message)


_BAD_ENUM = re.compile(r"Invalid enum value (?P<value>.+)")
_BAD_TYPE = re.compile(r"Expected `[^`]+`, got `(?P<type>[^`]+)`")


def problem_text(root: type, path: str, message: str) -> str:
    """msgspec's ``message`` about field ``path`` of ``root`` as lem says it: lower case,
    and for a field of fixed choices (a ``Literal`` or an ``Enum``), which they are:
    ``expected one of: 'cpu', 'cuda', got 'gpu'`` (the value as it was written)."""
    choices = field_choices(root, path)
    if choices:
        listed = ", ".join(repr(c) for c in choices)
        bad_enum, bad_type = _BAD_ENUM.fullmatch(message), _BAD_TYPE.fullmatch(message)
        if bad_enum:
            return f"expected one of: {listed}, got {bad_enum.group('value')}"
        if bad_type:
            return f"expected one of: {listed}, got a value of type '{bad_type.group('type')}'"
    return message.replace("`", "'").rstrip(".").lower()


def field_choices(root: type, path: str) -> list[Any]:
    """The values a field of fixed choices takes — ``path`` dotted (a list's items by
    index, a dict's values by key) from struct type ``root`` — as msgspec lists them; [] for
    any other field or a path that leads nowhere."""
    nodes: list[msgspec.inspect.Type] = [msgspec.inspect.type_info(root)]
    for part in path.split(".") if path else []:
        nodes = [child for node in nodes for child in _children(node, part)]
    found = [value for node in nodes for value in _literal_values(node)]
    return list(dict.fromkeys(found))


def _members(node: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(node, msgspec.inspect.UnionType):
        return [m for t in node.types for m in _members(t)]
    return [node]


def _children(node: msgspec.inspect.Type, part: str) -> list[msgspec.inspect.Type]:
    """The types ``part`` of a path can lead to from ``node``."""
    children: list[msgspec.inspect.Type] = []
    for member in _members(node):
        if isinstance(member, msgspec.inspect.StructType):
            children += [f.type for f in member.fields if f.encode_name == part]
        elif isinstance(member, msgspec.inspect.DictType):
            children.append(member.value_type)
        elif isinstance(member, msgspec.inspect.CollectionType) and part.isdigit():
            children.append(member.item_type)  # list, set, variable-length tuple
        elif isinstance(member, msgspec.inspect.TupleType) and part.isdigit():
            children += member.item_types[int(part) : int(part) + 1]
    return children


def _literal_values(node: msgspec.inspect.Type) -> list[Any]:
    values: list[Any] = []
    for member in _members(node):
        if isinstance(member, msgspec.inspect.LiteralType):
            values += member.values
        elif isinstance(member, msgspec.inspect.EnumType):
            values += [e.value for e in member.cls]
    return values


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
        # ``Section | None`` (an optional section, e.g. workload.sweep) has its sub-fields too
        options = typing.get_args(field_type) if typing.get_origin(field_type) else (field_type,)
        structs = [t for t in options if isinstance(t, type) and issubclass(t, msgspec.Struct)]
        struct_type = structs[0] if len(structs) == 1 else None
        if struct_type is None and part != dotted.split(".")[-1]:
            raise ConfigError(path, where, f"'{'.'.join(walked)}' has no sub-fields")
