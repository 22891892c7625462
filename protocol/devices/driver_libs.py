"""The host's NVIDIA driver libraries, for Pythons whose loader does not look where they are.

A Nix-built Python's loader reads neither ``/etc/ld.so.cache`` nor ``/usr/lib``: on Ubuntu
or RHEL pynvml's ``CDLL("libnvidia-ml.so.1")`` and CUDA's ``libcuda.so.1`` are not found; on
NixOS they are in ``/run/opengl-driver/lib``. ``find_driver_libs`` takes every library from
the first of these places that has NVML or CUDA (one driver's files are never mixed with
another's): 1. ``/run/opengl-driver/lib`` (NixOS); 2. the host's ldconfig cache, from the
host's ldconfig by absolute path (``/sbin/ldconfig -p``, ``/usr/sbin/ldconfig -p``: a Nix
ldconfig on PATH reads another cache), this machine's architecture only, the first entry of
a name (the one the host's loader takes); 3. ``/usr/lib/<arch>-linux-gnu``, ``/usr/lib64``,
``/usr/local/nvidia/lib64`` (GPU containers), ``/usr/lib/wsl/lib`` (WSL). Which libraries:
``DRIVER_LIBRARY_STEMS`` — NVML, and of libnvidia-container's compute set (``nvc_info.c``)
the CUDA driver and what it loads; no OpenCL, graphics or video library.

Workers get a private folder of symlinks to exactly those files (``link_folder``), first
on their ``LD_LIBRARY_PATH`` (``coordinator/execution/launcher.py``), never the host's
whole ``/usr/lib``,
whose libc or libstdc++ would shadow a Nix Python's own. Every worker gets it, not only
those with a ``/nix/store`` Python: a path does not tell which loader a Python uses (Guix
and Homebrew bring their own glibc too; a venv hides it behind a link), and a Python using
the host's loader finds there the very files its cache names. It goes before the user's
``LD_LIBRARY_PATH`` so that another driver build there (a nixpkgs nvidia-x11 not matching
the kernel module) cannot win; the price: CUDA forward-compatibility libraries
(cuda-compat) given through ``LD_LIBRARY_PATH`` are overridden.

The coordinator loads NVML itself: ``preload_nvml`` (run where ``protocol/devices/nvml.py`` first
initialises NVML) loads libnvidia-ml by absolute path when its soname alone does not load;
glibc then answers pynvml's ``CDLL("libnvidia-ml.so.1")`` with it (it matches the sonames of
loaded objects). This module is in ``protocol/`` because that hook runs in workers too,
which import nothing from ``lem.coordinator``; it needs only the standard library.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lem.protocol.errors import LemError
from lem.protocol.variables import NVML_REPLAY

NVML_SONAME = "libnvidia-ml.so.1"
CUDA_SONAME = "libcuda.so.1"
DRIVER_LIBRARY_STEMS = frozenset(
    {
        "libnvidia-ml",  # NVML
        "libcuda",  # the CUDA driver
        "libcudadebugger",  # CUDA debugger support
        "libnvidia-ptxjitcompiler",  # PTX → SASS JIT (loaded by libcuda)
        "libnvidia-nvvm",  # NVVM compiler library
        "libnvidia-gpucomp",  # shared compiler library (recent drivers; soname = version)
        "libnvidia-tileiras",  # Tile IR JIT (recent drivers)
        "libnvidia-fatbinaryloader",  # fatbin loader (used by libcuda in old drivers)
        "libnvidia-pkcs11",  # encrypt/decrypt library
        "libnvidia-pkcs11-openssl3",  # the same for OpenSSL 3
    }
)
_VERSIONED_NAME = re.compile(r"(lib[\w-]+)\.so(?:\.\d+)+")  # libcuda.so.1, libcuda.so.580.95.05
_LDCONFIG_ENTRY = re.compile(r"\s+(\S+) \(([^)]*)\) => (.+)")  # "\tNAME (libc6,x86-64) => PATH"
_ARCHES = {"x86_64": ("x86-64", "x86_64-linux-gnu"), "aarch64": ("AArch64", "aarch64-linux-gnu")}
_LDCONFIG_ARCH, _MULTIARCH = _ARCHES.get(platform.machine(), _ARCHES["x86_64"])


class DriverLibsError(LemError, OSError):
    """The link folder cannot be made or reused; ``str(exc)`` says why."""


@dataclass(frozen=True)
class DriverSearch:
    """Where to look, in order. Tests point every root into a temporary folder."""

    nixos_dir: Path = Path("/run/opengl-driver/lib")
    ldconfigs: tuple[Path, ...] = (Path("/sbin/ldconfig"), Path("/usr/sbin/ldconfig"))
    ldconfig_arch: str = _LDCONFIG_ARCH  # ldconfig's tag for this machine: "x86-64"
    standard_dirs: tuple[Path, ...] = (
        Path(f"/usr/lib/{_MULTIARCH}"),
        Path("/usr/lib64"),
        Path("/usr/local/nvidia/lib64"),
        Path("/usr/lib/wsl/lib"),
    )
    ldconfig_timeout_s: float = 10.0


@dataclass(frozen=True)
class DriverLibs:
    """What ``find_driver_libs`` found: empty ``libraries`` and ``source`` None if nothing."""

    libraries: Mapping[str, Path] = field(default_factory=dict)  # link name → the real file
    source: str | None = None  # "/run/opengl-driver/lib (NixOS)", "ldconfig cache (…)", a folder
    searched: tuple[str, ...] = ()  # every place looked at before, and why it gave nothing

    def file_count(self) -> int:
        """Distinct files (a soname and a versioned name may lead to one file)."""
        return len(set(self.libraries.values()))


def is_driver_library(name: str) -> bool:
    """``libcuda.so.1`` or ``libnvidia-gpucomp.so.580.95.05`` yes; ``libcuda.so``, libc no."""
    match = _VERSIONED_NAME.fullmatch(name)
    return match is not None and match.group(1) in DRIVER_LIBRARY_STEMS


def _has_driver(libraries: Mapping[str, Path]) -> bool:
    return NVML_SONAME in libraries or CUDA_SONAME in libraries


def _from_folder(folder: Path) -> dict[str, Path]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    paths = {name: folder / name for name in names if is_driver_library(name)}
    return {name: Path(os.path.realpath(p)) for name, p in paths.items() if p.exists()}


def parse_ldconfig(output: str, arch: str) -> dict[str, Path]:
    """Driver libraries in ``ldconfig -p`` output: ``arch`` entries, the first of a name."""
    libraries: dict[str, Path] = {}
    for line in output.splitlines():
        entry = _LDCONFIG_ENTRY.fullmatch(line)
        if entry is None or entry[1] in libraries or not is_driver_library(entry[1]):
            continue
        if arch in (flag.strip() for flag in entry[2].split(",")):
            path = Path(entry[3].strip())
            if path.exists():
                libraries[entry[1]] = Path(os.path.realpath(path))
    return libraries


def _from_ldconfig(search: DriverSearch) -> tuple[dict[str, Path], str]:
    ldconfig = next((p for p in search.ldconfigs if os.access(p, os.X_OK)), None)
    if ldconfig is None:
        return {}, f"ldconfig cache (no {' or '.join(map(str, search.ldconfigs))})"
    label = f"ldconfig cache ({ldconfig} -p)"
    try:
        done = subprocess.run(
            [str(ldconfig), "-p"],
            capture_output=True,
            text=True,
            timeout=search.ldconfig_timeout_s,
            env={**os.environ, "LC_ALL": "C"},
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {}, f"{label}: {exc}"
    return parse_ldconfig(done.stdout, search.ldconfig_arch), label


def find_driver_libs(search: DriverSearch | None = None) -> DriverLibs:
    """The host's NVML and CUDA driver libraries from the first place that has them."""
    search = search or DriverSearch()
    searched: list[str] = []
    nixos = _from_folder(search.nixos_dir)
    if _has_driver(nixos):
        return DriverLibs(nixos, f"{search.nixos_dir} (NixOS)", tuple(searched))
    searched.append(str(search.nixos_dir))
    cached, label = _from_ldconfig(search)
    if _has_driver(cached):
        return DriverLibs(cached, label, tuple(searched))
    searched.append(label)
    for folder in search.standard_dirs:
        found = _from_folder(folder)
        if _has_driver(found):
            return DriverLibs(found, str(folder), tuple(searched))
        searched.append(str(folder))
    return DriverLibs(searched=tuple(searched))


def driver_libs_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/lem/driver-libs``, else ``~/.cache/lem/driver-libs``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "lem" / "driver-libs"


def link_folder(found: DriverLibs, root: Path) -> Path | None:
    """A folder under ``root`` of symlinks to exactly ``found``'s files, or None if none.

    Named by 16 hex digits of SHA-256 over the links, so the same libraries reuse it. It is
    made in a temporary folder and renamed into place: a reader never sees it half made.
    Raises ``DriverLibsError`` where something else has that name (never replaced).
    """
    if not found.libraries:
        return None
    links = {name: str(target) for name, target in sorted(found.libraries.items())}
    listing = "".join(f"{name}\0{target}\n" for name, target in links.items())
    folder = root / hashlib.sha256(listing.encode()).hexdigest()[:16]
    if os.path.lexists(folder):
        return _reuse(folder, links)
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        for name, target in links.items():
            os.symlink(target, building / name)
        building.chmod(0o755)
        os.rename(building, folder)  # fails on a non-empty folder or a non-folder
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if os.path.lexists(folder):  # another lem made it meanwhile, or something else is there
            return _reuse(folder, links)
        raise
    return folder


def _reuse(folder: Path, links: Mapping[str, str]) -> Path:
    if folder.is_symlink() or not folder.is_dir():
        raise DriverLibsError(f"{folder} exists and is not a folder: not replaced; remove it")
    present = {p.name: os.readlink(p) if p.is_symlink() else None for p in folder.iterdir()}
    if present != links:
        raise DriverLibsError(f"{folder} holds other files than lem's driver links; remove it")
    return folder


def worker_driver_folder(
    environ: Mapping[str, str] | None = None, search: DriverSearch | None = None
) -> Path | None:
    """The link folder workers get (made if missing), or None without a driver library."""
    return link_folder(find_driver_libs(search), driver_libs_root(environ))


def preload_nvml(
    search: DriverSearch | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Load libnvidia-ml by absolute path if its soname alone does not load; that path.

    None, loading nothing more: NVML is replayed (``LEM_NVML_REPLAY``), the soname loads by
    itself, or no libnvidia-ml was found (pynvml then says the library is missing). Raises
    ``OSError`` when the library found cannot be loaded (e.g. it needs a newer glibc).
    """
    env = os.environ if environ is None else environ
    if NVML_REPLAY.get(env):
        return None
    try:
        ctypes.CDLL(NVML_SONAME)
        return None
    except OSError:
        pass
    path = find_driver_libs(search).libraries.get(NVML_SONAME)
    if path is not None:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return path


def loaded_library(stem: str = "libnvidia-ml", maps: Path = Path("/proc/self/maps")) -> Path | None:
    """The file of ``stem`` this process has mapped (``/proc/self/maps``), or None."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(f"{stem}.so"):
            return Path(fields[5])
    return None
