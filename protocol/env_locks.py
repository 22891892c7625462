"""Engine-environment locks: which lock an environment was made from, and whether what is
installed in it is exactly that lock.

The locks ship with lem (package ``lem.envs``, the repository's ``envs/``): per engine
environment a hash-pinned ``requirements.txt`` (``envs/make_locks.py`` makes them). A lock
is named by its folder (``pytorch``, ``pytorch-cpu``, ``vllm``) and identified by the
SHA-256 of that file. An environment made by ``lem env sync`` or by Nix says which lock it
was made from in ``<sys.prefix>/lem-env.json``; any other interpreter is compared with each
of its backend's locks (the engine's ``environment.locks``, ``lem.protocol.engines``) and
the nearest is named.

Run as a script (``python env_locks.py``) in any interpreter, this file prints that
interpreter's facts as JSON (installed distributions, marker environment, its
``lem-env.json``) using the standard library only: the coordinator asks worker
interpreters this way without lem being importable there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

MARKER_NAME = "lem-env.json"
LOCK_FILE = "requirements.txt"
UNRESOLVED_FILE = "UNRESOLVED.txt"
# Installers a fresh environment brings along: extra when the lock does not pin them, and
# then not counted as a difference. lem itself is linked in, not installed from the lock.
SEEDED = frozenset({"pip", "setuptools", "wheel", "lem"})
MAX_DIFFERENCES = 20


def normalise(name: str) -> str:
    """PEP 503 name: ``Typing_Extensions`` → ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_facts() -> dict[str, Any]:
    """This interpreter's installed distributions, marker environment and marker file."""
    dists: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(normalise(name), dist.version)
    info = sys.implementation
    version = info.version
    impl_version = f"{version.major}.{version.minor}.{version.micro}"
    if version.releaselevel != "final":
        impl_version += version.releaselevel[0] + str(version.serial)
    markers = {
        "implementation_name": info.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }
    marker_file = Path(sys.prefix) / MARKER_NAME
    try:
        made_from = json.loads(marker_file.read_text())
    except (OSError, ValueError):
        made_from = None
    return {"distributions": dists, "markers": markers, "made_from": made_from}


# --- below: the coordinator's and the worker's side (needs ``packaging``) ---


@dataclass(frozen=True)
class Lock:
    """One shipped lock: its name, SHA-256 and pins (``None`` where it could not be made)."""

    name: str
    sha256: str | None
    text: str | None
    unresolved_reason: str | None = None


def locks_root() -> Any:
    """The shipped locks (``lem.envs``: a folder in a checkout or in an installed wheel), or
    the folder ``LEM_ENV_LOCKS_DIR`` names (tests; a site's own locks)."""
    from lem.protocol.variables import ENV_LOCKS_DIR  # here: as a script, stdlib only

    if folder := ENV_LOCKS_DIR.get():
        return Path(folder)
    return resources.files("lem.envs")


def read_lock(name: str) -> Lock:
    """Lock ``name`` as shipped; ``text`` None (with the reason) where it does not exist."""
    folder = locks_root().joinpath(name)
    lock_file = folder.joinpath(LOCK_FILE)
    if lock_file.is_file():
        data = lock_file.read_bytes()
        return Lock(name, hashlib.sha256(data).hexdigest(), data.decode())
    note = folder.joinpath(UNRESOLVED_FILE)
    reason = f"lem ships no lock named {name!r}"
    if note.is_file():  # its first line is the reason; uv's own lines follow as comments
        reason = (note.read_text().splitlines() or [reason])[0]
    return Lock(name, None, None, unresolved_reason=reason)


def lock_pins(text: str, markers: dict[str, str]) -> dict[str, str]:
    """``{normalised name: version}`` of a hash-pinned requirements file, for the
    environment ``markers`` describes (entries whose marker is false are left out)."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for entry in re.sub(r"\\\n", " ", text).splitlines():
        entry = re.sub(r"\s--hash=\S+", "", entry).strip()
        if not entry or entry.startswith(("#", "-")):
            continue
        requirement = Requirement(entry)
        if requirement.marker is not None and not requirement.marker.evaluate(markers):
            continue
        specs = [s for s in requirement.specifier if s.operator in ("==", "===")]
        if specs:
            pins[normalise(requirement.name)] = specs[0].version
    return pins


def differences(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What ``installed`` has other than ``pins``: versions, missing, extra (sorted)."""
    from packaging.version import InvalidVersion, Version

    def same(a: str, b: str) -> bool:
        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a == b

    found = []
    for name, version in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            found.append(f"missing: {name}=={version}")
        elif not same(have, version):
            found.append(f"{name}: {have} installed, lock has {version}")
    for name, version in sorted(installed.items()):
        if name not in pins and name not in SEEDED:
            found.append(f"extra: {name}=={version}")
    return found


def summarise(found: list[str]) -> str:
    """``2 versions differ, 1 missing, 23 extra`` for a list from ``differences``."""
    missing = sum(d.startswith("missing:") for d in found)
    extra = sum(d.startswith("extra:") for d in found)
    changed = sum(not d.startswith(("missing:", "extra:", "lock changed")) for d in found)
    parts = [
        "the lock changed since" if any(d.startswith("lock changed") for d in found) else "",
        f"{changed} version(s) differ" if changed else "",
        f"{missing} missing" if missing else "",
        f"{extra} extra" if extra else "",
    ]
    return ", ".join(p for p in parts if p)


def lock_status(backend: str, facts: dict[str, Any]) -> Any:
    """The ``EngineLock`` of an interpreter with these ``environment_facts``: the lock it
    says it was made from, else the nearest of ``backend``'s locks; never raises."""
    from lem.protocol.engines.registry import find_engine
    from lem.protocol.results import EngineLock

    made_from = facts.get("made_from") or {}
    installed: dict[str, str] = facts.get("distributions", {})
    markers: dict[str, str] = facts.get("markers", {})
    engine = find_engine(backend)
    candidates = engine.environment.locks if engine is not None else ()
    named = made_from.get("lock")
    if named and named not in candidates:  # lem env sync --requirements FILE
        return EngineLock(
            name=str(named),
            sha256=made_from.get("lock_sha256"),
            made_from=True,
            unavailable_reason="made from a requirements file lem does not ship",
        )
    locks = [read_lock(name) for name in ([named] if named else candidates)]
    usable = [lock for lock in locks if lock.text is not None]
    if not usable:
        reasons = "; ".join(f"{lock.name}: {lock.unresolved_reason}" for lock in locks)
        return EngineLock(name=None, sha256=None, unavailable_reason=f"no lock ({reasons})")
    try:
        found = {
            lock.name: differences(lock_pins(lock.text or "", markers), installed)
            for lock in usable
        }
    except Exception as exc:  # a damaged lock or marker: say so, never fail a worker
        return EngineLock(name=None, sha256=None, unavailable_reason=f"cannot compare: {exc}")
    lock = min(usable, key=lambda candidate: len(found[candidate.name]))
    diffs = found[lock.name]
    sha256 = lock.sha256
    if named and made_from.get("lock_sha256") != lock.sha256:
        sha256 = made_from.get("lock_sha256")
        diffs = [f"lock changed since this environment was made (lem ships {lock.sha256})"]
        diffs += found[lock.name]
    return EngineLock(
        name=lock.name,
        sha256=sha256,
        made_from=bool(named),
        matches=not diffs,
        difference_count=len(diffs),
        summary=summarise(diffs),
        differences=diffs[:MAX_DIFFERENCES],
    )


if __name__ == "__main__":
    print(json.dumps(environment_facts()))
