"""lem's import structure, read from its source (ast; nothing is imported): no import
cycles, the coordinator never imports the workers, and ``lem.protocol`` imports neither.

Every import counts, wherever it is written: at the top, in a function, or under
``TYPE_CHECKING``. Modules are named through pyproject.toml's package-dir mapping
(``protocol/`` is ``lem.protocol``; ``api/__init__.py`` is ``lem``).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"api": "lem", "protocol": "lem.protocol", "coordinator": "lem.coordinator",
            "workers": "lem.workers"}  # fmt: skip

# No cycle is allowed (the engine registry broke the config one).
ALLOWED_CYCLES: set[frozenset[str]] = set()


def modules(root: Path = REPO, packages: dict[str, str] = PACKAGES) -> dict[str, Path]:
    """Module name → its file, for every Python file under the mapped folders."""
    found = {}
    for folder, package in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in out if m in known and m != name}


def import_graph(root: Path = REPO, packages: dict[str, str] = PACKAGES) -> dict[str, set[str]]:
    found = modules(root, packages)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def disallowed_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return sorted(
        sorted(c) for c in cycles(graph) if not any(c <= allowed for allowed in ALLOWED_CYCLES)
    )


def imports_across(graph: dict[str, set[str]], source: str, targets: tuple[str, ...]) -> list[str]:
    """``a -> b`` for each module under package ``source`` importing one under ``targets``."""

    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    return sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if under(m, source)
        for d in deps
        if any(under(d, t) for t in targets)
    )


def test_the_graph_covers_lem() -> None:
    graph = import_graph()
    assert {"lem", "lem.protocol.devices.nvml", "lem.coordinator.cli.main"} <= set(graph)
    assert "lem.workers.engines.pytorch.prompts" in graph
    assert "lem.protocol.devices.driver_libs" in graph["lem.protocol.devices.nvml"]


def test_no_import_cycles_but_the_allowed_one() -> None:
    assert disallowed_cycles(import_graph()) == []


def test_the_coordinator_never_imports_the_workers() -> None:
    assert imports_across(import_graph(), "lem.coordinator", ("lem.workers",)) == []


def test_the_protocol_imports_neither_coordinator_nor_workers() -> None:
    graph = import_graph()
    assert imports_across(graph, "lem.protocol", ("lem.coordinator", "lem.workers")) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A cycle through a relative, a function-level and a TYPE_CHECKING import, and
    imports across the boundaries, are all found."""
    files = {
        "protocol/__init__.py": "",
        "protocol/a.py": "from .b import thing\n",
        "protocol/b.py": "def f():\n    from lem.protocol import c\n",
        "protocol/c.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lem.protocol.a\n"
        ),
        "protocol/d.py": "from lem.coordinator.x import y\n",
        "coordinator/__init__.py": "",
        "coordinator/x.py": "import lem.workers.w\n",
        "workers/__init__.py": "",
        "workers/w.py": "import os\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    packages = {"protocol": "lem.protocol", "coordinator": "lem.coordinator",
                "workers": "lem.workers"}  # fmt: skip
    graph = import_graph(tmp_path, packages)
    assert disallowed_cycles(graph) == [["lem.protocol.a", "lem.protocol.b", "lem.protocol.c"]]
    assert imports_across(graph, "lem.coordinator", ("lem.workers",)) == [
        "lem.coordinator.x -> lem.workers.w"
    ]
    assert imports_across(graph, "lem.protocol", ("lem.coordinator", "lem.workers")) == [
        "lem.protocol.d -> lem.coordinator.x"
    ]
