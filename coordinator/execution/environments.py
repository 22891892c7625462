"""Which Python interpreter runs each backend's workers (the environment providers).

The coordinator never imports an engine; it only chooses an interpreter per backend and
asks that interpreter about itself in a subprocess. Rules, first match wins:

1. ``explicit``: ``LEM_<BACKEND>_PYTHON`` (e.g. ``LEM_VLLM_PYTHON``); the older
   ``LEM_PYTHON_<BACKEND>`` spelling is still read.
2. ``nix``: ``LEM_NIX_WORKER_PYTHONS=pytorch=/nix/store/…/bin/python:…`` (built
   environments, as ``nix develop`` exports), else ``LEM_NIX_WORKER_DRVS=pytorch=/nix/store/
   ….drv:pytorch-cpu=…`` exported by the flake's ``lem`` wrapper: derivations of the worker
   environments, built (``nix-store --realise``) the first time a worker needs one.
3. ``venv``: a virtual environment made by ``lem env sync BACKEND`` from one of the
   backend's shipped locks (``protocol/env_locks.py``), cached in
   ``$XDG_CACHE_HOME/lem/envs/<lock>-<key>``, where the key hashes the lock and the Python
   version: a changed lock is a new key, so an environment never outlives its lock.
4. ``current``: the interpreter running the coordinator (``sys.executable``).

The backends and their locks are the engine registry's (``lem.protocol.engines``). An
engine may have a CPU twin of its lock (PyTorch: ``pytorch`` for CUDA, ``pytorch-cpu``):
where no NVIDIA driver is loaded (``/proc/driver/nvidia/version`` absent) the CPU one is
the default, in rules 2 and 3.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lem.protocol.engines.registry import ENGINES, engine_named
from lem.protocol.engines.spec import EngineSpec
from lem.protocol.env_locks import read_lock
from lem.protocol.errors import BadInput
from lem.protocol.variables import (
    BACKEND_PYTHON,
    ENV_CACHE_DIR,
    LEGACY_BACKEND_PYTHON,
    NIX_WORKER_DRVS,
    NIX_WORKER_PYTHONS,
)

LEM_PACKAGES = ("protocol", "coordinator", "workers", "envs")
NIX_VARIABLE = NIX_WORKER_PYTHONS.name
MARKER_NAME = "lem-env.json"
NIX_DRVS_VARIABLE = NIX_WORKER_DRVS.name
CACHE_DIR_VARIABLE = ENV_CACHE_DIR.name
NVIDIA_DRIVER_PROC = Path("/proc/driver/nvidia/version")


# The backends lem knows: the registered engines, by name.
KNOWN_BACKENDS: dict[str, EngineSpec[Any]] = {engine.name: engine for engine in ENGINES}


@dataclass(frozen=True)
class ResolvedPython:
    """Where ``backend``'s worker interpreter comes from (``source``) and its path.
    ``nix_drv``: the Nix derivation ``python`` is built from (None: not from a derivation);
    until it is built, ``python`` does not exist yet."""

    backend: str
    source: str  # "explicit", "nix", "venv" or "current"
    python: str
    detail: str  # the variable, venv folder or "sys.executable" that gave it
    nix_drv: str | None = None


def known_backend(name: str) -> EngineSpec[Any]:
    """The registered engine ``name``; raises ``KeyError`` with the known names."""
    return engine_named(name)


def repo_root() -> Path:
    """The folder holding lem's packages' source (a checkout's root, or site-packages/lem)."""
    return Path(__file__).resolve().parents[2]


def gpu_driver_present(proc_file: Path = NVIDIA_DRIVER_PROC) -> bool:
    """Whether an NVIDIA kernel driver is loaded here (what picks a CUDA lock over a CPU one)."""
    return proc_file.exists()


def default_lock(backend: str, gpu: bool | None = None) -> str:
    """The lock ``backend``'s environment is made from here: the CUDA one on a GPU node,
    else its CPU twin where it has one (``<lock>-cpu``)."""
    locks = known_backend(backend).environment.locks
    on_gpu = gpu_driver_present() if gpu is None else gpu
    cpu = [name for name in locks if name.endswith("-cpu")]
    return locks[0] if on_gpu or not cpu else cpu[0]


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """``$LEM_ENV_CACHE_DIR``, else ``$XDG_CACHE_HOME/lem/envs`` (``~/.cache/lem/envs``)."""
    env = os.environ if environ is None else environ
    if folder := ENV_CACHE_DIR.get(env):
        return Path(folder)
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "lem" / "envs"


def env_key(lock_text: bytes, python_version: str, lem_code: str | None = None) -> str:
    """16 hex digits of SHA-256 over the lock (or requirements) file, the ``X.Y`` Python
    and where this lem's code lives (``lem_code``, default this one's: an environment links
    in the code of the lem that made it, so another lem checkout gets its own)."""
    code = str(lem_package_dirs()["lem"]) if lem_code is None else lem_code
    digest = hashlib.sha256(
        lock_text + b"\0python=" + python_version.encode() + b"\0lem=" + code.encode()
    )
    return digest.hexdigest()[:16]


def venv_dir(lock_name: str, lock_text: bytes, python_version: str, root: Path) -> Path:
    """The cached environment's folder for this lock, Python and lem."""
    return root / f"{lock_name}-{env_key(lock_text, python_version)}"


def lem_package_dirs() -> dict[str, Path]:
    """Where this lem's code lives: ``lem``'s ``__init__.py`` and each subpackage's folder
    (a checkout's mapped folders, or site-packages/lem/ of an installed wheel)."""
    found: dict[str, Path] = {}
    top = importlib.util.find_spec("lem")
    if top is None or top.origin is None:
        raise RuntimeError("lem itself cannot be found")
    found["lem"] = Path(top.origin)
    for name in LEM_PACKAGES:
        spec = importlib.util.find_spec(f"lem.{name}")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"lem.{name} cannot be found")
        found[name] = Path(next(iter(spec.submodule_search_locations)))
    return found


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
    backend: str, environ: dict[str, str] | None = None, gpu: bool | None = None
) -> tuple[Path, dict[str, str]] | None:
    """The newest complete environment synced for ``backend`` from a lock lem ships today,
    the default lock's (``default_lock``) first; None when there is none.

    Complete: its marker (written last by ``lem env sync``) names the lock and its SHA-256,
    which must be today's, and the folder name matches that lock and the marker's Python.
    """
    root = cache_dir(environ)
    if not root.is_dir():
        return None
    preferred = default_lock(backend, gpu)
    found = []
    for name in known_backend(backend).environment.locks:
        lock = read_lock(name)
        if lock.text is None:
            continue
        for folder in root.glob(f"{name}-*"):
            try:
                info = json.loads((folder / MARKER_NAME).read_text())
            except (OSError, ValueError):
                continue
            version = str(info.get("python_version", ""))
            if (
                info.get("lock") == name
                and info.get("lock_sha256") == lock.sha256
                and folder == venv_dir(name, lock.text.encode(), version, root)
                and venv_python(folder).exists()
            ):
                rank = (name == preferred, (folder / MARKER_NAME).stat().st_mtime)
                found.append((rank, folder, info))
    if not found:
        return None
    _, folder, info = max(found, key=lambda item: item[0])
    return folder, {str(k): str(v) for k, v in info.items()}


def resolve_python(
    backend: str, environ: dict[str, str] | None = None, gpu: bool | None = None
) -> ResolvedPython:
    """The interpreter for ``backend``'s workers, by the rules in this module's docstring."""
    env = os.environ if environ is None else environ
    for variable in (BACKEND_PYTHON, LEGACY_BACKEND_PYTHON):
        if python := variable.get(env, backend):
            return ResolvedPython(backend, "explicit", python, variable.named(backend))
    lock = default_lock(backend, gpu)
    for name in dict.fromkeys((lock, backend)):
        nix = parse_nix_pythons(env.get(NIX_VARIABLE, ""))
        if name in nix:
            return ResolvedPython(backend, "nix", nix[name], f"{NIX_VARIABLE} {name}")
        drvs = parse_nix_pythons(env.get(NIX_DRVS_VARIABLE, ""))
        if name in drvs:
            python = nix_output(drvs[name]) + "/bin/python"
            detail = f"{NIX_DRVS_VARIABLE} {name}"
            return ResolvedPython(backend, "nix", python, detail, nix_drv=drvs[name])
    synced = find_synced_venv(backend, dict(env), gpu)
    if synced is not None:
        folder, _ = synced
        return ResolvedPython(backend, "venv", str(venv_python(folder)), str(folder))
    return ResolvedPython(backend, "current", sys.executable, "sys.executable")


def check_explicit_python(backend: str, environ: dict[str, str] | None = None) -> None:
    """Refuse (``BadInput``) an explicit interpreter (rule 1) that cannot be run: a missing
    file, a directory, a file without execute permission — before anything is stored."""
    resolved = resolve_python(backend, environ)
    if resolved.source == "explicit" and shutil.which(resolved.python) is None:
        what = "a directory" if Path(resolved.python).is_dir() else "not an executable file"
        raise BadInput(f"{resolved.detail}={resolved.python}: {what}; set it to a Python")


def nix_output(drv: str) -> str:
    """The output path a derivation builds (``nix-store --query --outputs``; builds nothing).
    An unreadable derivation gives the derivation's own path, which runs no Python."""
    try:
        done = subprocess.run(
            ["nix-store", "--query", "--outputs", drv],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return drv


def realise(resolved: ResolvedPython) -> str:
    """``resolved.python``, building its Nix derivation first where it is not built yet
    (``nix-store --realise``: from the lock's wheels; may take minutes the first time).
    Raises ``RuntimeError`` with nix's last line when the build fails."""
    if resolved.nix_drv is None or Path(resolved.python).exists():
        return resolved.python
    done = subprocess.run(
        ["nix-store", "--realise", resolved.nix_drv],
        stdout=subprocess.PIPE, stderr=None, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not Path(resolved.python).exists():
        raise RuntimeError(
            f"building {resolved.backend}'s worker environment {resolved.nix_drv} failed "
            f"(nix-store --realise exited {done.returncode})"
        )
    return resolved.python


def current_python_version() -> str:
    """``X.Y`` of the interpreter running the coordinator."""
    return ".".join(platform.python_version_tuple()[:2])
