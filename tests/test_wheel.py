"""The wheel is complete. pyproject.toml lists lem's packages by hand (setuptools' find cannot
follow the mapping of top-level folders to ``lem.*``), so a test guards that list against the
tree; then a wheel built from the tree holds every module at its mapped path, the engine
environments' locks (``lem.envs``), ``py.typed`` and the documentation lem's messages point to
(``lem.docs``); installed non-editably into a fresh venv, lem finds its data there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.test_docs_command import pages_named_by_product_code

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
NOT_SHIPPED = {"tests"}  # top-level folders with an __init__.py that stay out of the wheel
DATA = [
    "lem/protocol/py.typed",
    "lem/envs/pytorch/pyproject.toml",
    "lem/envs/pytorch/uv.lock",
    "lem/envs/pytorch/requirements.txt",
    "lem/envs/pytorch-cpu/requirements.txt",
    "lem/envs/pytorch-cpu/torch-cpu-wheels.txt",
    "lem/envs/vllm/pyproject.toml",
    "lem/envs/vllm/uv.lock",
    "lem/envs/vllm/requirements.txt",
    "lem/envs/tensorrt/pyproject.toml",
    "lem/envs/tensorrt/UNRESOLVED.txt",
    "lem/docs/methodology.md",
    "lem/docs/results.md",
]
BUILD_TIMEOUT_S = 240


def code_folders() -> dict[str, Path]:
    """Every folder holding Python code under a mapped folder, by the package it maps to."""
    found: dict[str, Path] = {}
    for name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for module in base.rglob("*.py"):
            parts = module.parent.relative_to(base).parts
            if "__pycache__" not in parts:
                found[".".join([name, *parts])] = module.parent
    return found


def wheel_path(source: Path) -> str:
    """Where a file of the source tree lands in the wheel (``coordinator/x.py`` →
    ``lem/coordinator/x.py``, ``api/__init__.py`` → ``lem/__init__.py``)."""
    relative = source.relative_to(ROOT)
    for name, folder in sorted(PACKAGE_DIR.items(), key=lambda item: -len(item[1])):
        if relative.parts[: len(Path(folder).parts)] == Path(folder).parts:
            inside = relative.parts[len(Path(folder).parts) :]
            return "/".join([*name.split("."), *inside])
    raise AssertionError(f"{relative} is under no mapped folder")


def test_every_folder_of_code_is_a_listed_package() -> None:
    folders = code_folders()
    missing = sorted(set(folders) - set(PACKAGES))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not sorted(set(PACKAGES) - set(folders)), "a listed package has no folder"
    for name, folder in folders.items():
        assert (folder / "__init__.py").is_file(), f"{name}: {folder} has no __init__.py"


def test_every_top_level_package_is_mapped() -> None:
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert top - NOT_SHIPPED == {Path(f).parts[0] for f in PACKAGE_DIR.values()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree (only what the build reads: a stale ``build/``
    in the checkout would otherwise end up in it), offline, with this venv's setuptools."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in {Path(f).parts[0] for f in PACKAGE_DIR.values()}:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    build += ["--no-build-isolation", "--wheel-dir", str(out), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("lem-*.whl")
    return built


def test_wheel_holds_every_module_and_the_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = [module for folder in code_folders().values() for module in folder.glob("*.py")]
    assert len(modules) > 100
    for expected in ("lem/workers/engines/tensorrt/engine.py", "lem/coordinator/report/page.py"):
        assert expected in {wheel_path(m) for m in modules}
    missing = sorted(wheel_path(m) for m in modules if wheel_path(m) not in names)
    assert not missing, f"modules not in {wheel.name}: {missing}"
    pages = [f"lem/docs/{page}.md" for page in pages_named_by_product_code()]
    missing = sorted(set(DATA + pages) - names)
    assert not missing, f"data not in {wheel.name}: {missing}"


CHECK_INSTALLED = """\
import importlib.resources as r, json, lem, lem.coordinator.report, lem.workers.engines.tensorrt
envs, docs = r.files("lem.envs"), r.files("lem.docs")
print(json.dumps({
    "lem": lem.__file__,
    "envs": [envs.joinpath(f"{e}/requirements.txt").is_file() for e in ("pytorch-cpu", "vllm")],
    "docs": docs.joinpath("methodology.md").is_file(),
}))
"""


def test_installed_wheel_finds_its_data(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # lem's dependencies (click, rich, ...) from this venv, after the installed lem: a plain
    # path line, so this venv's .pth files (its editable lem among them) are not run there.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    done = subprocess.run(
        [*install, "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    done = run_clean(tmp_path, python, "-c", CHECK_INSTALLED)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["lem"]).is_relative_to(venv), found["lem"]  # the wheel's, not the tree's
    assert found["envs"] == [True, True] and found["docs"]
    done = run_clean(tmp_path, venv / "bin" / "lem", "docs", "--path", "methodology")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv), done.stdout


def run_clean(cwd: Path, *command: str | Path) -> subprocess.CompletedProcess[str]:
    """``command`` run outside the tree and without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=60)
