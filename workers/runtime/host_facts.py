"""Facts about the host a worker runs on, for every result's environment: the OS and
kernel, the CPU model, how many logical CPUs the worker may use, and the RAM (MiB). Read
from /etc/os-release and /proc; a fact that cannot be read is None, never a guess."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

KIB_PER_MIB = 1024


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def os_release(os_release_text: str | None = None) -> str:
    """``"<system> <kernel release> (<distribution>)"``, the distribution from
    /etc/os-release's PRETTY_NAME where there is one."""
    text = _read("/etc/os-release") if os_release_text is None else os_release_text
    pretty = None
    for line in (text or "").splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            pretty = value.strip().strip('"')
    base = f"{platform.system()} {platform.release()}"
    return f"{base} ({pretty})" if pretty else base


def cpu_model(cpuinfo_text: str | None = None) -> str | None:
    """The first ``model name`` of /proc/cpuinfo."""
    text = _read("/proc/cpuinfo") if cpuinfo_text is None else cpuinfo_text
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def memory_total_mib(meminfo_text: str | None = None) -> float | None:
    """MemTotal of /proc/meminfo, in MiB."""
    text = _read("/proc/meminfo") if meminfo_text is None else meminfo_text
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit() and fields[2:3] == ["kB"]:
                return int(fields[1]) / KIB_PER_MIB
    return None


def host_facts() -> dict[str, Any]:
    """The Environment fields ``os_release``, ``cpu_model``, ``cpu_count`` (logical CPUs
    this process may run on), ``memory_total_mib`` and ``lem_revision``."""
    try:
        cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    return {
        "os_release": os_release(),
        "cpu_model": cpu_model(),
        "cpu_count": cpus,
        "memory_total_mib": memory_total_mib(),
        "lem_revision": lem_revision(),
    }


GIT_TIMEOUT_S = 2.0


def lem_revision(package_dir: Path | None = None) -> str | None:
    """The git commit lem's code was loaded from, ``+dirty`` when the work tree has
    uncommitted changes; None when lem is not running from a git checkout (an installed
    wheel: its version is then all there is) or git is missing."""
    import subprocess

    folder = package_dir or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None
