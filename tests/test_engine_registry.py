"""The engine registry (``lem.protocol.engines``) is the one place outside the engines' own
packages that names an engine, and the engine modules stand outside every import circle.

**What counts as naming an engine** (``engine_mentions``), in product code (``protocol/``,
``coordinator/``, ``workers/``, ``api/``) outside ``protocol/engines/`` (the registry, the
spec and each engine's module) and ``workers/engines/<name>/`` (each registered engine's
worker package):

- a string literal holding a registered engine's name where no letter or digit precedes
  it, in any case: ``"pytorch"``, ``"vLLM's"``, ``"TensorRT-LLM"``, ``"tensorrt_llm"``,
  ``"LEM_VLLM_PYTHON"``, an f-string's text or a module path in a string all count;
- an identifier one of whose ``_``-separated parts, lower-cased, starts with an engine's
  name: ``config.pytorch``, ``PyTorchConfig``, ``vllm_problems``, a keyword argument
  ``tensorrt=``, an imported ``lem.protocol.engines.vllm``.

Docstrings and comments do not count: documentation may name engines as examples. The
names are the registry's, so an engine added there is covered at once. ``NOT_THE_ENGINE``
lists the literals that name a library sharing an engine's name, each with its reason.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig, config_hash, load_key
from lem.protocol.engines import registry
from lem.protocol.engines.registry import ENGINE_NAMES, ENGINES, EngineSections, engine_named
from lem.protocol.engines.spec import EngineEnvironment, EngineSpec, ModeSupport

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("protocol", "coordinator", "workers", "api")
REGISTRY_DIR = Path("protocol/engines")
# (file, line's text) → why it is not the engine: literals naming a library of that name.
NOT_THE_ENGINE = {
    ("coordinator/execution/launcher.py", "string 'PYTORCH_'"): (
        "the torch library's environment variables (PYTORCH_CUDA_ALLOC_CONF, …), passed to "
        "every worker whatever its engine"
    ),
}


def _docstrings(tree: ast.AST) -> set[int]:
    """``id``s of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                found.add(id(body[0].value))
    return found


def _identifiers(node: ast.AST) -> Iterator[str]:
    """The identifiers a node introduces or uses (names, attributes, definitions,
    arguments, keyword arguments, imports)."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield node.name
    elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
        yield str(node.arg)
    elif isinstance(node, ast.alias):
        yield from node.name.split(".")
        if node.asname:
            yield node.asname
    elif isinstance(node, ast.ImportFrom) and node.module:
        yield from node.module.split(".")


def engine_mentions(source: str, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, what) for each mention of an engine in ``source`` by the rule of this
    module's docstring."""
    in_text = re.compile(rf"(?<![a-z0-9])({'|'.join(map(re.escape, names))})", re.IGNORECASE)
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and in_text.search(node.value)
        ):
            found.append((node.lineno, f"string {node.value[:80]!r}"))
        for identifier in _identifiers(node):
            parts = identifier.lower().split("_")
            if any(part.startswith(name) for part in parts for name in names):
                found.append((getattr(node, "lineno", 0), f"identifier {identifier!r}"))
    return sorted(set(found))


def _exempt(relative: Path) -> bool:
    if relative.is_relative_to(REGISTRY_DIR):
        return True
    return any(relative.is_relative_to(Path("workers/engines") / name) for name in ENGINE_NAMES)


def test_engine_names_occur_only_in_the_registry_and_the_engines_own_packages() -> None:
    offences = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if _exempt(relative):
                continue
            for line, what in engine_mentions(path.read_text(encoding="utf-8"), ENGINE_NAMES):
                if (relative.as_posix(), what) not in NOT_THE_ENGINE:
                    offences.append(f"{relative}:{line}: {what}")
    assert not offences, "engine named outside lem.protocol.engines:\n" + "\n".join(offences)


def test_the_rule_counts_strings_and_identifiers_not_docstrings_or_comments() -> None:
    names = ("pytorch", "vllm", "tensorrt")
    clean = '''"""Module doc naming pytorch and vLLM."""
# a comment about tensorrt
def f(config):
    """Function doc: the pytorch section."""
    return config.backend, "torch", "settings", f"{config.backend} x"
'''
    assert engine_mentions(clean, names) == []
    dirty = """import lem.protocol.engines.vllm
from lem.protocol.engines.pytorch import PyTorchConfig
X = ("pytorch", "TensorRT-LLM has wheels", "tensorrt_llm", "LEM_VLLM_PYTHON")
def g(config, vllm_section):
    return config.pytorch.multi_gpu, replace(config, tensorrt=1), f"{config} vLLM"
"""
    found = engine_mentions(dirty, names)
    whats = [what for _, what in found]
    for expected in (
        "identifier 'vllm'",  # the imported module path
        "identifier 'PyTorchConfig'",
        "string 'pytorch'",
        "string 'TensorRT-LLM has wheels'",
        "string 'tensorrt_llm'",
        "string 'LEM_VLLM_PYTHON'",
        "identifier 'vllm_section'",
        "identifier 'pytorch'",  # config.pytorch
        "identifier 'tensorrt'",  # the keyword argument
        "string ' vLLM'",  # an f-string's text
    ):
        assert expected in whats, (expected, found)
    assert {line for line, _ in found} == {1, 2, 3, 4, 5}


def _imports(path: Path, module: str) -> set[str]:
    """The lem modules ``path`` imports anywhere in it (``TYPE_CHECKING`` blocks and
    function bodies included): an imported name that is a module counts as that module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lem.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            if base.startswith("lem."):
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def protocol_imports() -> dict[str, set[str]]:
    """lem.protocol's import graph: module → the lem.protocol modules it imports."""
    modules: dict[str, Path] = {}
    for path in (ROOT / "protocol").rglob("*.py"):
        parts = path.relative_to(ROOT / "protocol").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(("lem", "protocol", *parts))] = path
    return {name: _imports(path, name) & modules.keys() for name, path in modules.items()}


def _on_cycles(graph: dict[str, set[str]]) -> set[str]:
    """The modules that lie on an import cycle of ``graph``."""
    on_cycle = set()
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            current = stack.pop()
            if current == start:
                on_cycle.add(start)
                break
            if current not in seen:
                seen.add(current)
                stack.extend(graph.get(current, ()))
    return on_cycle


def test_no_import_cycle_through_the_config_layers_the_registry_or_an_engine() -> None:
    graph = protocol_imports()
    engines = {name for name in graph if name.startswith("lem.protocol.engines")}
    assert {f"lem.protocol.engines.{name}" for name in ENGINE_NAMES} <= engines
    mine = engines | {"lem.protocol.common_config", "lem.protocol.capabilities"}
    assert not _on_cycles(graph) & mine
    for name in ENGINE_NAMES:  # an engine module needs the spec only
        assert graph[f"lem.protocol.engines.{name}"] == {"lem.protocol.engines.spec"}
    assert graph["lem.protocol.engines.spec"] == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _on_cycles(graph) == {"a", "b", "c"}


def test_each_engine_has_its_section_module_package_entry_point_and_locks() -> None:
    sections = {f.name: f.type for f in msgspec.structs.fields(EngineSections)}
    for engine in ENGINES:
        assert sections[engine.name] is engine.section
        assert engine.section.__module__ == f"lem.protocol.engines.{engine.name}"
        module, cls = engine.entry_point_parts()
        assert module.startswith(f"lem.workers.engines.{engine.name}.")
        source = ROOT / "workers" / Path(*module.split(".")[2:]).with_suffix(".py")
        defined = re.search(rf"^class {cls}\b", source.read_text(encoding="utf-8"), re.M)
        assert defined, engine.entry_point
        assert engine.environment.locks, engine.name
        for lock in engine.environment.locks:
            folder = ROOT / "envs" / lock
            assert (folder / "requirements.txt").is_file() or (
                folder / "UNRESOLVED.txt"
            ).is_file(), lock
        assert set(engine.modes) <= {"offline", "server"}


def test_the_backend_field_takes_the_registered_names_and_the_first_is_the_default() -> None:
    assert ExperimentConfig().backend == ENGINE_NAMES[0] == registry.DEFAULT_ENGINE
    schema = msgspec.json.schema(ExperimentConfig)["$defs"]["ExperimentConfig"]
    assert schema["properties"]["backend"]["enum"] == sorted(ENGINE_NAMES)
    for name in ENGINE_NAMES:
        assert msgspec.convert({"backend": name}, ExperimentConfig).backend == name
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value 'tgi'"):
        msgspec.convert({"backend": "tgi"}, ExperimentConfig)
    known = r"\(known: openai, pytorch, tensorrt, vllm\)"
    with pytest.raises(KeyError, match=rf"unknown backend 'tgi' {known}"):
        engine_named("tgi")


def test_the_engine_sections_keep_their_place_among_the_fields() -> None:
    fields = list(ExperimentConfig.__struct_fields__)
    assert fields[:2] == ["name", "backend"]
    start = fields.index("warmup") + 1
    assert fields[start : start + len(ENGINE_NAMES)] == list(ENGINE_NAMES)
    assert fields[start + len(ENGINE_NAMES) :] == ["workload", "slo", "gpu"]


def _dummy_spec() -> EngineSpec[Any]:
    class DummyConfig(msgspec.Struct, frozen=True, kw_only=True):
        knob: int = 1

    return EngineSpec(
        name="dummy",
        section=DummyConfig,
        entry_point="lem.workers.engines.dummy.engine:DummyBackend",
        environment=EngineEnvironment(
            locks=("dummy",),
            distributions=("dummy",),
            probe_imports=("dummy",),
            engine_distribution="dummy",
            worker_distribution="dummy",
        ),
        modes={"offline": ModeSupport("x")},
    )


def test_a_new_engine_by_default_changes_no_other_experiments_hash_or_load_key() -> None:
    spec = _dummy_spec()
    other: Any = SimpleNamespace(backend=ENGINE_NAMES[0], dummy=spec.section())
    assert spec.hashed_section(other, {"knob": 1}) is None
    assert spec.load_key_part(other) == {}
    selected: Any = SimpleNamespace(backend="dummy", dummy=spec.section())
    assert spec.hashed_section(selected, {"knob": 1}) == {"knob": 1}
    assert spec.load_key_part(selected) == {"dummy": spec.section()}
    assert spec.load_key_paths() == ("dummy",)
    assert spec.entry_point_parts() == ("lem.workers.engines.dummy.engine", "DummyBackend")


def test_hashes_and_load_keys_of_existing_experiments_are_unchanged() -> None:
    """Values computed before the registry (commit 13730d2) for the same configs."""
    base = {"device": "cuda", "gpu_count": 2, "num_prompts": 4}
    expected: list[tuple[dict[str, Any], str, str]] = [
        ({}, "d8bc3a1ee27306da", "3dfe9e4939b7c0dd"),
        ({"backend": "vllm"}, "7905c7dd358b1f00", "cf67ca714ce3a1f7"),
        ({"backend": "tensorrt"}, "6cf8a658028bb36b", "bbfc1f5460dc796f"),
        ({"backend": "vllm", "vllm": {"enforce_eager": True}}, "b897cf06eecf6c43",
         "8116488186b65412"),
        ({"backend": "tensorrt", "tensorrt": {"engine_cache_dir": "/x", "tp_size": 2}},
         "eabb00b4f9506d90", "c108d7e66be3039b"),
        ({"pytorch": {"compile": True}}, "905401879fa3f883", "3dfe9e4939b7c0dd"),
        ({"pytorch": {"multi_gpu": "data"}}, "1647113679134058", "c8adc1bed67f644f"),
        ({"pytorch": {"attn_implementation": "eager"}}, "e4925d95d3f7dc7b", "070d9205a4c3e80f"),
    ]  # fmt: skip
    for changes, hashed, key in expected:
        config = msgspec.convert({**base, **changes}, ExperimentConfig)
        assert (config_hash(config), load_key(config)) == (hashed, key), changes


def test_the_coordinator_reads_the_registry_without_importing_a_worker_or_an_engine() -> None:
    code = (
        "import sys, lem.coordinator.cli.main, lem.coordinator.cli.doctor\n"
        "import lem.coordinator.execution.environments, lem.protocol.engines.registry\n"
        "bad = [m for m in sys.modules if m.startswith('lem.workers') or m.split('.')[0] in\n"
        "       ('torch', 'transformers', 'vllm', 'tensorrt_llm')]\n"
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_registry_refuses_a_section_that_does_not_match_its_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "ENGINES", (*ENGINES, _dummy_spec()))
    monkeypatch.setattr(registry, "ENGINE_NAMES", (*ENGINE_NAMES, "dummy"))
    with pytest.raises(TypeError, match="EngineSections has"):
        registry._check()
