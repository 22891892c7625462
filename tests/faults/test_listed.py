"""The fault tests' lists stay true: every ``file::test`` that tests/faults/README.md and
docs/architecture.md's failure model name exists, and every test here is in the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parents[1]
REFERENCE = re.compile(r"`((?:tests/)?[\w/]+\.py)::(\w+)`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")
    }


def references(text: str, folder: Path) -> list[tuple[Path, str]]:
    """(file, test) for every `` `file.py::test` `` in ``text``; a bare file name is in
    ``folder``, a ``tests/…`` one in the repository."""
    found = []
    for name, test in REFERENCE.findall(text):
        found.append((REPO / name if name.startswith("tests/") else folder / name, test))
    return found


def test_every_listed_test_exists() -> None:
    listed = references((HERE / "README.md").read_text(), HERE)
    listed += references((REPO / "docs" / "architecture.md").read_text(), REPO)
    assert len(listed) > 40
    missing = [f"{p.relative_to(REPO)}::{t}" for p, t in listed if t not in defined_tests(p)]
    assert missing == []


def test_every_fault_test_is_listed() -> None:
    listed = {(p.name, t) for p, t in references((HERE / "README.md").read_text(), HERE)}
    here = {(p.name, t) for p in HERE.glob("test_*.py") for t in defined_tests(p)}
    here -= {("test_listed.py", t) for t in defined_tests(HERE / "test_listed.py")}
    assert sorted(here - listed) == []


def test_a_missing_test_is_found(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_here() -> None:\n    pass\n")
    listed = references("`test_x.py::test_here` and `test_x.py::test_gone`", tmp_path)
    assert [t for p, t in listed if t not in defined_tests(p)] == ["test_gone"]
