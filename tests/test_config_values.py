"""Hostile values through the real CLI (issue 15): every float field refuses NaN,
infinity and huge values, every int field huge ones, and control characters in names
never reach the terminal; each exits 2 with one line naming file, field and problem."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from lem.coordinator.cli.main import main
from lem.protocol.config import ExperimentConfig
from tests.cli_input import BASE, lem, refused, write

# 6 and 7: every float finite and bounded, every int bounded


def _numeric_fields(struct_type: Any, prefix: str = "") -> Iterator[tuple[str, type]]:
    """(dotted field, float or int) for every number field of the schema, nested."""
    hints = typing.get_type_hints(struct_type)
    for field in msgspec.structs.fields(struct_type):
        kinds = typing.get_args(hints[field.name])
        kinds = kinds if isinstance(hints[field.name], types.UnionType) else (hints[field.name],)
        for kind in kinds:
            if kind is float or kind is int:
                yield prefix + field.name, kind
            elif isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                yield from _numeric_fields(kind, prefix + field.name + ".")


NUMBER_FIELDS = sorted(_numeric_fields(ExperimentConfig), key=lambda item: item[0])


def test_the_walk_finds_the_number_fields() -> None:
    names = dict(NUMBER_FIELDS)
    assert names["timeout_s"] is float and names["batch_size"] is int
    assert names["idle_baseline.window_s"] is float and names["workload.concurrency"] is int
    assert len(NUMBER_FIELDS) > 30


def test_nan_timeout_through_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "  timeout_s: .nan\n")
    refused(lem("config", "validate", str(path)), str(path), "experiment.timeout_s", "finite")
    path = write(tmp_path, BASE + "  min_window_s: .inf\n", "inf.yaml")
    refused(lem("campaign", str(path), "--dry-run"), "experiment.min_window_s", "finite")


def test_huge_ints_through_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + f"  batch_size: {10**30}\n")
    refused(lem("config", "validate", str(path)), str(path), "experiment.batch_size", "2147483647")
    path = write(tmp_path, BASE + f"cycles: {2**63}\n", "cycles.yaml")
    refused(lem("campaign", str(path), "--dry-run"), "cycles: must be", "2147483647")


def _cli(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "validate", str(path), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def _flow(mapping: dict[str, Any]) -> str:
    """``mapping`` as flow YAML, its leaves written as they are (``.nan`` stays YAML)."""
    parts = (f"{k}: {_flow(v) if isinstance(v, dict) else v}" for k, v in mapping.items())
    return "{" + ", ".join(parts) + "}"


def _with_field(tmp_path: Path, dotted: str, value: str) -> Path:
    """A campaign whose experiment sets ``dotted`` (nested sections too) to ``value``."""
    experiment: dict[str, Any] = {"model": {"source": "builtin", "name": "lem-tiny"}}
    *parents, leaf = dotted.split(".")
    section = experiment
    for part in parents:
        section = section.setdefault(part, {})
    section[leaf] = value
    return write(tmp_path, f"name: c\nexperiment: {_flow(experiment)}\n")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+300"])
def test_every_float_field_refuses_nan_inf_and_huge(value: str, tmp_path: Path) -> None:
    for name in [name for name, kind in NUMBER_FIELDS if kind is float]:
        status, output = _cli(_with_field(tmp_path, name, value))
        assert status == 2, (name, output)
        assert f"experiment.{name}: must be a finite number" in output, (name, output)


@pytest.mark.parametrize("value", [2**31, 2**63, -(2**63), 10**30])
def test_every_int_field_refuses_huge(value: int, tmp_path: Path) -> None:
    for name in [name for name, kind in NUMBER_FIELDS if kind is int]:
        status, output = _cli(_with_field(tmp_path, name, str(value)))
        assert status == 2, (name, output)
        assert f"experiment.{name}: must be an integer from" in output, (name, output)


def test_set_values_are_bounded_too(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    status, output = _cli(path, "--set", "timeout_s=.nan")
    assert status == 2 and "timeout_s: must be a finite number" in output, output
    status, output = _cli(path, "--set", f"warmup.max_batches={2**63}")
    assert status == 2 and "warmup.max_batches: must be an integer" in output, output


def test_campaign_level_ints_are_bounded(tmp_path: Path) -> None:
    for field in ("cycles", "seed", "max_attempts"):
        path = write(tmp_path, BASE + f"{field}: {2**63}\n")
        status, output = _cli(path)
        assert status == 2 and f"{field}: must be" in output, output


# 10: names reach the terminal escaped


def test_control_characters_in_names_never_reach_the_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: "x\\e[2J\\nlem: error: fake"\n' + BASE.split("\n", 1)[1])
    for args in (("config", "validate", str(path)), ("campaign", str(path), "--dry-run")):
        done = lem(*args)
        assert "\x1b" not in done.stdout + done.stderr
        assert "lem: error: fake" not in (done.stdout + done.stderr).splitlines()
        assert not any(line.startswith("lem: error: fake") for line in done.stdout.splitlines())


def test_control_characters_in_error_lines_are_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '  "bad\\e[2J\\nlem: error: fake": 1\n')
    line = refused(lem("config", "validate", str(path)), "unknown field")
    assert "\x1b" not in line


def test_paths_from_the_command_line_are_shown_escaped(tmp_path: Path) -> None:
    """Found by the fuzz test: the file named on the command line (validate) and the
    output of ``results export -o`` reached the terminal raw."""
    from lem.coordinator.store.results_store import Store
    from tests.synthetic_results import add_campaign, config

    path = write(tmp_path, BASE, "c\x1b[2J.yaml")
    done = CliRunner().invoke(main, ["config", "validate", str(path)], color=True)
    assert done.exit_code == 0 and "c\\x1b[2J.yaml: ok" in done.stdout, done.output
    assert "\x1b" not in done.output
    db = tmp_path / "lem.db"
    with Store(db) as store:
        add_campaign(store, "a", [config(1)], [[0.5]])
    out = tmp_path / "o\x1b[2J.csv"
    done = CliRunner().invoke(
        main, ["results", "export", "--store", str(db), "-o", str(out)], color=True
    )
    assert done.exit_code == 0 and out.is_file() and "o\\x1b[2J.csv" in done.stderr
    assert "\x1b" not in done.output


def test_the_debug_log_shows_input_escaped_too(tmp_path: Path) -> None:
    """Found by the fuzz test: with -v the failure's traceback quoted the input raw."""
    done = lem("-v", "config", "validate", str(tmp_path / "c\x1b[2J.yaml"))
    assert done.returncode == 2 and "Traceback" in done.stderr  # the debug log is there
    assert "\x1b" not in done.stderr and "c\\x1b[2J.yaml" in done.stderr.splitlines()[-1]


def test_axis_values_are_named_as_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + f"zip: [{{batch_size: [1, {2**40}]}}]\n")
    status, output = _cli(path)
    assert status == 2 and "zip.0.batch_size.1: must be an integer" in output, output
