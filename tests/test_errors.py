"""One error root: every exception class lem defines derives from ``LemError``
(``protocol/errors.py``), so the command line maps error kinds to exit statuses in one
place (``coordinator/cli/common.py: exit_status``).

The classes are found by reading the source (ast), not by importing it: the workers'
modules import engines (torch, vLLM, TensorRT-LLM) that need not be installed here.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lem.coordinator.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    LemGroup,
    bad_input,
    exit_status,
)
from lem.coordinator.cli.logs import configure_logging
from lem.coordinator.execution.interrupts import Interrupted
from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.store.results_store import StoreError
from lem.protocol.devices.nvml import NvmlUnavailable
from lem.protocol.errors import BadInput, LemError

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("api", "protocol", "coordinator", "workers")
ROOT = "LemError"
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


Definition = tuple[str, str, list[str]]  # where (file:line), class name, its bases' names


def class_definitions(folders: list[Path]) -> list[Definition]:
    """Every class defined in ``folders``' Python files, with its bases' (last) names."""
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    where = f"{path.relative_to(folder.parent)}:{node.lineno}"
                    bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                    found.append((where, node.name, bases))
    return found


def unrooted_exceptions(definitions: list[Definition]) -> tuple[set[str], list[str]]:
    """The names of the exception classes among ``definitions`` (one of whose ancestors is
    a built-in exception, ``LemError``, or a class from elsewhere named ``…Error`` or
    ``…Exception``), and ``where name`` of those not derived from ``LemError``."""
    bases_of: dict[str, list[str]] = {}
    for _, name, bases in definitions:
        bases_of.setdefault(name, []).extend(bases)

    def ancestors(bases: list[str], seen: frozenset[str] = frozenset()) -> set[str]:
        out = set(bases)
        for base in set(bases) - seen:
            out |= ancestors(bases_of.get(base, []), seen | {base})
        return out

    def foreign_error(name: str) -> bool:
        return name not in bases_of and name.endswith(("Error", "Exception"))

    exceptions, unrooted = set(), []
    for where, name, bases in definitions:
        above = ancestors(bases)
        if above & (BUILTIN_EXCEPTIONS | {ROOT}) or any(map(foreign_error, above)):
            exceptions.add(name)
            if ROOT not in above and name != ROOT:
                unrooted.append(f"{where} {name}")
    return exceptions, unrooted


def test_every_exception_class_of_lem_derives_from_lem_error() -> None:
    definitions = class_definitions([REPO / folder for folder in PRODUCT])
    exceptions, unrooted = unrooted_exceptions(definitions)
    # the walk sees what it must: the root, and classes of protocol, coordinator and workers
    assert {"LemError", "ConfigError", "BackendError", "Cancelled", "NVMLError"} <= exceptions
    assert unrooted == [], f"exception classes not derived from LemError: {unrooted}"


def test_the_walk_finds_a_class_outside_the_tree(tmp_path: Path) -> None:
    """The check can fail: subclasses of a built-in exception (directly or through another
    class) and of another package's error are reported; other classes are no exceptions."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "import json\n"
        "from lem.protocol.errors import LemError\n"
        "class Good(LemError): pass\n"
        "class AlsoGood(Good, ValueError): pass\n"
        "class Stray(ValueError): pass\n"
        "class StrayChild(Stray): pass\n"
        "class Decoding(json.JSONDecodeError): pass\n"
        "class NotAnError: pass\n"
    )
    exceptions, unrooted = unrooted_exceptions(class_definitions([tmp_path / "pkg"]))
    assert exceptions == {"Good", "AlsoGood", "Stray", "StrayChild", "Decoding"}
    assert unrooted == ["pkg/m.py:5 Stray", "pkg/m.py:6 StrayChild", "pkg/m.py:7 Decoding"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError("c.yaml", "batch_size", "must be >= 1"), EXIT_BAD_INPUT),
        (StoreError("no campaign with id 'x'"), EXIT_BAD_INPUT),
        (BadInput("--gpus: expected indices"), EXIT_BAD_INPUT),
        (NvmlUnavailable("no driver"), EXIT_FAILED),
        (LemError("anything else"), EXIT_FAILED),
        (Interrupted("SIGINT"), EXIT_INTERRUPTED),
    ],
)
def test_exit_status_of_each_kind(error: LemError, status: int) -> None:
    assert exit_status(error) == status


def test_the_lem_group_prints_one_line_and_exits_with_the_kind() -> None:
    @click.group(cls=LemGroup)
    def group() -> None:
        configure_logging(json_lines=False)  # as lem's group does: info and above

    @group.command("raise")
    @click.argument("kind")
    def raising(kind: str) -> None:
        if kind == "bad":
            bad_input("--gpus: expected indices")
        if kind == "config":
            raise ConfigError("c.yaml", "batch_size", "must be >= 1")
        if kind == "failed":
            raise NvmlUnavailable("no driver")
        raise ValueError("a bug")

    def run(kind: str) -> tuple[int, str]:
        done = CliRunner().invoke(group, ["raise", kind])
        return done.exit_code, done.output

    assert run("bad") == (EXIT_BAD_INPUT, "lem: error: --gpus: expected indices\n")
    status, output = run("config")
    assert status == EXIT_BAD_INPUT and output.startswith("lem: error: c.yaml: batch_size")
    assert output.count("\n") == 1
    assert run("failed") == (EXIT_FAILED, "lem: error: no driver\n")
    done = CliRunner().invoke(group, ["raise", "bug"])  # not a LemError: a traceback, as ever
    assert isinstance(done.exception, ValueError)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "missing command: one of campaign, compare, config, docs"),
        (["config"], "missing command: one of schema, show, validate"),
        (["--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["results", "list", "--bogus"], "No such option '--bogus'"),
        (["compare", "a"], "Missing argument 'CAMPAIGN_B'"),
        (["config", "show", "c.yaml", "--experiment", "x\x1b[2J"], "'x\\x1b[2J' is not a valid"),
    ],
)
def test_a_command_line_click_cannot_parse_is_one_line_and_exit_2(
    argv: list[str], message: str
) -> None:
    from lem.coordinator.cli.main import main

    done = CliRunner().invoke(main, argv, prog_name="lem")
    assert done.exit_code == EXIT_BAD_INPUT, done.output
    assert done.stderr.startswith("lem: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "--help)" in done.stderr and "\x1b" not in done.stderr
    assert done.stdout == ""


def test_help_is_still_asked_for_with_help() -> None:
    from lem.coordinator.cli.main import main

    for argv in (["--help"], ["config", "-h"], ["results", "list", "--help"]):
        helped = CliRunner().invoke(main, argv, prog_name="lem")
        assert helped.exit_code == 0 and helped.stdout.startswith("Usage: lem"), helped.output
