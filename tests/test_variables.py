"""The registry of ``LEM_*`` variables (``protocol/variables.py``): product code reads them
only through it, names no undeclared one, docs/architecture.md's table lists exactly its
names, and ``lem doctor`` shows them."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from lem.coordinator.cli.doctor import render_variables
from lem.coordinator.cli.main import main
from lem.coordinator.execution.environments import resolve_python
from lem.protocol import variables
from lem.protocol.variables import (
    BACKEND_PYTHON,
    NVML_REPLAY,
    PREFIX,
    VARIABLES,
    declared,
    set_variables,
)

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("api", "protocol", "coordinator", "workers")
REGISTRY = REPO / "protocol" / "variables.py"
NAME = re.compile(r"\bLEM_[A-Z0-9_<>]*[A-Z0-9>]")
TEXT_TOKENS = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1)}


def product_files(root: Path = REPO, folders: tuple[str, ...] = PRODUCT) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def literal_reads(paths: list[Path]) -> list[str]:
    """``file:line 'LEM_…'`` for each string (or f-string part) starting with ``LEM_``
    outside the registry: a variable read by a name of its own."""
    found = []
    for path in paths:
        if path == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if node.value.startswith(PREFIX):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    return sorted(found)


def undeclared_names(paths: list[Path]) -> list[str]:
    """``file:line NAME`` for each ``LEM_`` name in a string, docstring or comment that is
    no declared variable (nor a member of a declared family)."""
    found = []
    for path in paths:
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for token in tokens:
            if token.type in TEXT_TOKENS:
                for name in NAME.findall(token.string):
                    if declared(name) is None and name not in {v.name for v in VARIABLES}:
                        found.append(f"{path.name}:{token.start[0]} {name}")
    return found


def documented_names(text: str) -> list[str]:
    """The first name in backticks of each row of the "Environment variables" table."""
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("`")[1] for row in rows]


def test_product_code_reads_lem_variables_only_through_the_registry() -> None:
    assert literal_reads(product_files()) == []


def test_every_lem_name_product_code_mentions_is_declared() -> None:
    assert undeclared_names(product_files()) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "w.py").write_text(
        'import os\n"""Reads LEM_NVML_REPLAY and LEM_TYPO."""\n'
        'A = os.environ.get("LEM_NVML_REPLAY")\n'
        'B = f"LEM_{A}_PYTHON"  # LEM_VLLM_PYTHON is a member; LEM_NOPE is not\n'
        'C = "point LEM_VLLM_PYTHON elsewhere"\n'
    )
    files = product_files(tmp_path, ("workers",))
    assert literal_reads(files) == ["w.py:3 'LEM_NVML_REPLAY'", "w.py:4 'LEM_'"]
    assert undeclared_names(files) == ["w.py:2 LEM_TYPO", "w.py:4 LEM_NOPE"]
    table = "x\n## Environment variables\n| variable | effect |\n| `LEM_A` (e.g. `LEM_B`) | a |\n"
    assert documented_names(table + "\n## Next\n| `LEM_C` | c |\n") == ["LEM_A"]


def test_the_architecture_table_lists_exactly_the_registry() -> None:
    documented = documented_names((REPO / "docs" / "architecture.md").read_text())
    assert sorted(documented) == sorted(v.name for v in VARIABLES)
    assert len(documented) == len(set(documented))


def test_each_variable_is_declared_once_and_described() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    declared_here = {v.name for v in vars(variables).values() if isinstance(v, variables.Variable)}
    assert declared_here == set(names)  # every entry is in VARIABLES
    for v in VARIABLES:
        assert v.name.startswith(PREFIX) and v.meaning and v.read_by and v.default


def test_a_family_names_its_members_and_empty_is_unset() -> None:
    assert BACKEND_PYTHON.named("vllm") == "LEM_VLLM_PYTHON"
    assert BACKEND_PYTHON.get({"LEM_VLLM_PYTHON": "/py"}, "vllm") == "/py"
    assert declared("LEM_TENSORRT_PYTHON") is BACKEND_PYTHON
    assert declared("LEM_PYTHON_VLLM") is variables.LEGACY_BACKEND_PYTHON
    assert declared("LEM_NIX_WORKER_PYTHONS") is variables.NIX_WORKER_PYTHONS
    assert declared("LEM_NVML_REPLAYS") is None
    assert NVML_REPLAY.get({"LEM_NVML_REPLAY": ""}) is None
    assert NVML_REPLAY.get({}) is None
    env = {"LEM_VLLM_PYTHON": "", "LEM_PYTHON_VLLM": "/legacy", "PATH": "/bin"}
    assert resolve_python("vllm", env).detail == "LEM_PYTHON_VLLM"
    assert set_variables(env) == [
        ("LEM_PYTHON_VLLM", "/legacy", variables.LEGACY_BACKEND_PYTHON),
        ("LEM_VLLM_PYTHON", "", BACKEND_PYTHON),
    ]


def _rendered(every: bool, environ: dict[str, str]) -> str:
    out = io.StringIO()
    render_variables(Console(file=out, width=400), every, environ)
    return out.getvalue()


def test_doctor_shows_the_variables_set_with_their_meaning() -> None:
    out = _rendered(False, {"LEM_SLEEP_HANG": "batch_size=2", "LEM_SLEPE_HANG": "x", "HOME": "/"})
    assert "lem variables (set here)" in out
    assert "LEM_SLEEP_HANG" in out and "batch_size=2" in out and "sleep backend hangs" in out
    assert "LEM_SLEPE_HANG" in out and "not a variable lem reads" in out
    assert "LEM_NVML_REPLAY" not in out
    assert _rendered(False, {}).startswith("lem variables: none set (lem doctor --variables")


def test_doctor_variables_lists_every_one() -> None:
    out = _rendered(True, {"LEM_VLLM_PYTHON": "/opt/vllm/bin/python"})
    for v in VARIABLES:
        assert v.meaning[:30] in out
    assert "LEM_VLLM_PYTHON" in out and "/opt/vllm/bin/python" in out
    assert "LEM_PYTORCH_PYTHON" not in out  # the family, not each member, where unset
    done = CliRunner().invoke(main, ["doctor", "--variables"])
    assert done.exit_code == 0, done.output
    assert "lem variables" in done.output and "LEM_TELEMETRY_INTERVAL_S" in done.output
