"""Which Python interpreter runs each backend's workers (the environment providers).

The coordinator never imports an engine; it only chooses an interpreter per backend and
asks that interpreter about itself in a subprocess. Rules, first match wins:

1. ``explicit``: ``LEM_<BACKEND>_PYTHON`` (e.g. ``LEM_VLLM_PYTHON``); the older
   ``LEM_PYTHON_<BACKEND>`` spelling is still read.
2. ``nix``: ``LEM_NIX_WORKER_PYTHONS=pytorch=/nix/store/…/bin/python:vllm=…``, exported
   by the flake's ``lem`` wrapper (``nix/lem.nix``).
3. ``venv``: a virtual environment made by ``lem env sync BACKEND`` from
   ``envs/<backend>.txt``, cached in ``$XDG_CACHE_HOME/lem/envs/<backend>-<key>``, where
   the key hashes the requirements file and the Python version; a changed file is a new key.
4. ``current``: the interpreter running the coordinator (``sys.executable``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

NIX_VARIABLE = "LEM_NIX_WORKER_PYTHONS"
MARKER_NAME = "lem-env.json"
REQUIREMENTS_DIR_VARIABLE = "LEM_ENV_REQUIREMENTS_DIR"
CACHE_DIR_VARIABLE = "LEM_ENV_CACHE_DIR"


@dataclass(frozen=True)
class BackendInfo:
    """A backend lem knows: the modules its worker imports and the engine's distribution."""

    name: str
    modules: tuple[str, ...]
    engine_distribution: str
    experimental: bool = False
    missing_hint: str = ""
    experimental_note: str = ""  # what "experimental" means for it, one line


KNOWN_BACKENDS: dict[str, BackendInfo] = {
    "pytorch": BackendInfo("pytorch", ("torch", "transformers"), "torch"),
    "vllm": BackendInfo(
        "vllm",
        ("vllm",),
        "vllm",
        missing_hint="install it with `lem env sync vllm` (a Linux CUDA wheel from PyPI)",
    ),
    "tensorrt": BackendInfo(
        "tensorrt",
        ("tensorrt_llm",),
        "tensorrt_llm",
        experimental=True,
        missing_hint=(
            "TensorRT-LLM has wheels only for some Linux/CUDA/Python combinations "
            "(pypi.nvidia.com), none may fit this platform/Python; experimental"
        ),
        experimental_note=(
            "its worker has never run on a GPU (written against the TensorRT-LLM 1.0 LLM API; "
            "only its config translation and engine cache are tested)"
        ),
    ),
}


@dataclass(frozen=True)
class ResolvedPython:
    """Where ``backend``'s worker interpreter comes from (``source``) and its path."""

    backend: str
    source: str  # "explicit", "nix", "venv" or "current"
    python: str
    detail: str  # the variable, venv folder or "sys.executable" that gave it


def known_backend(name: str) -> BackendInfo:
    """The table entry of ``name``; raises ``KeyError`` with the known names."""
    try:
        return KNOWN_BACKENDS[name]
    except KeyError:
        raise KeyError(
            f"unknown backend {name!r} (known: {', '.join(sorted(KNOWN_BACKENDS))})"
        ) from None


def repo_root() -> Path:
    """lem's source tree (the folder holding ``coordinator/``, ``workers/``, ``envs/``)."""
    return Path(__file__).resolve().parent.parent


def requirements_path(backend: str, environ: dict[str, str] | None = None) -> Path:
    """``envs/<backend>.txt`` (or under ``LEM_ENV_REQUIREMENTS_DIR``)."""
    env = os.environ if environ is None else environ
    folder = env.get(REQUIREMENTS_DIR_VARIABLE) or str(repo_root() / "envs")
    return Path(folder) / f"{backend}.txt"


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """``$LEM_ENV_CACHE_DIR``, else ``$XDG_CACHE_HOME/lem/envs`` (``~/.cache/lem/envs``)."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_DIR_VARIABLE):
        return Path(env[CACHE_DIR_VARIABLE])
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "lem" / "envs"


def env_key(requirements_text: bytes, python_version: str) -> str:
    """16 hex digits of SHA-256 over the requirements file and the ``X.Y`` Python version."""
    digest = hashlib.sha256(requirements_text + b"\0python=" + python_version.encode())
    return digest.hexdigest()[:16]


def venv_dir(backend: str, requirements_text: bytes, python_version: str, root: Path) -> Path:
    """The cached environment's folder for these requirements and Python."""
    return root / f"{backend}-{env_key(requirements_text, python_version)}"


def venv_python(folder: Path) -> Path:
    """The interpreter inside a virtual environment."""
    return folder / "bin" / "python"


def parse_nix_pythons(value: str) -> dict[str, str]:
    """``pytorch=/nix/store/a/bin/python:vllm=/nix/store/b/bin/python`` → a dict."""
    pythons: dict[str, str] = {}
    for part in value.split(":"):
        name, sep, path = part.partition("=")
        if sep and name.strip() and path.strip():
            pythons[name.strip()] = path.strip()
    return pythons


def find_synced_venv(
    backend: str, environ: dict[str, str] | None = None
) -> tuple[Path, dict[str, str]] | None:
    """The newest complete environment synced for the current requirements file, or None.

    Complete: its marker (written last by ``lem env sync``) records the requirements hash
    of today's file, and the folder name matches that hash and the marker's Python.
    """
    requirements = requirements_path(backend, environ)
    root = cache_dir(environ)
    if not requirements.is_file() or not root.is_dir():
        return None
    text = requirements.read_bytes()
    found = []
    for folder in root.glob(f"{backend}-*"):
        marker = folder / MARKER_NAME
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        version = str(info.get("python_version", ""))
        if folder == venv_dir(backend, text, version, root) and venv_python(folder).exists():
            found.append((marker.stat().st_mtime, folder, info))
    if not found:
        return None
    _, folder, info = max(found, key=lambda item: item[0])
    return folder, {str(k): str(v) for k, v in info.items()}


def resolve_python(backend: str, environ: dict[str, str] | None = None) -> ResolvedPython:
    """The interpreter for ``backend``'s workers, by the rules in this module's docstring."""
    env = os.environ if environ is None else environ
    for variable in (f"LEM_{backend.upper()}_PYTHON", f"LEM_PYTHON_{backend.upper()}"):
        if env.get(variable):
            return ResolvedPython(backend, "explicit", env[variable], variable)
    nix = parse_nix_pythons(env.get(NIX_VARIABLE, ""))
    if backend in nix:
        return ResolvedPython(backend, "nix", nix[backend], NIX_VARIABLE)
    synced = find_synced_venv(backend, dict(env))
    if synced is not None:
        folder, _ = synced
        return ResolvedPython(backend, "venv", str(venv_python(folder)), str(folder))
    return ResolvedPython(backend, "current", sys.executable, "sys.executable")


def current_python_version() -> str:
    """``X.Y`` of the interpreter running the coordinator."""
    return ".".join(platform.python_version_tuple()[:2])
