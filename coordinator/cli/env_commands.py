"""``lem env list`` and ``lem env sync BACKEND``: per-backend worker environments, each
made from one of lem's shipped locks (``protocol/env_locks.py``).

Engines are never imported here: each interpreter is asked about itself in a subprocess
(``protocol/env_locks.py`` run as a script: installed distributions, marker environment,
the lock it says it was made from).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from lem.coordinator.cli.common import bad_input
from lem.coordinator.execution.environments import (
    KNOWN_BACKENDS,
    MARKER_NAME,
    ResolvedPython,
    cache_dir,
    current_python_version,
    default_lock,
    known_backend,
    lem_package_dirs,
    resolve_python,
    venv_dir,
    venv_python,
)
from lem.protocol import env_locks
from lem.protocol.engines.registry import ENGINES, engine_of_lock
from lem.protocol.engines.spec import EngineSpec
from lem.protocol.env_locks import read_lock
from lem.protocol.errors import BadInput, LemError
from lem.protocol.results import EngineLock

PROBE_TIMEOUT_S = 60.0
# The engines with a CPU twin of their lock (``<lock>-cpu``): what ``--variant`` chooses for.
CPU_TWINNED = [e.name for e in ENGINES if any(n.endswith("-cpu") for n in e.environment.locks)]
LINK_PTH = "lem-source.pth"
SHOWN_DIFFERENCES = 5


@dataclass(frozen=True)
class EnvStatus:
    """One backend's row of ``lem env list``."""

    resolved: ResolvedPython
    engine_version: str | None
    python_version: str | None
    problem: str | None  # None: a worker can start there
    lock: EngineLock | None = None
    note: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


def interpreter_facts(python: str) -> dict[str, object]:
    """``env_locks.environment_facts()`` of ``python``, asked in a subprocess.
    Raises ``RuntimeError`` with the reason when it cannot be asked."""
    try:
        done = subprocess.run(
            [python, "-I", env_locks.__file__],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot run {python}: {exc}") from exc
    try:
        facts: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{python} is not a working Python: {last}") from None
    return facts


def probe_environment(engine: EngineSpec[Any], resolved: ResolvedPython) -> EnvStatus:
    """Ask ``resolved.python`` whether it can run ``engine``'s worker and which lock it
    matches; never raises. A Nix environment not built yet is described, not built."""
    if resolved.nix_drv is not None and not Path(resolved.python).exists():
        note = f"not built yet: the first worker builds it (nix-store --realise {resolved.nix_drv})"
        return EnvStatus(resolved, None, None, None, note=note)
    try:
        facts = interpreter_facts(resolved.python)
    except RuntimeError as exc:
        return EnvStatus(resolved, None, None, str(exc))
    installed: dict[str, str] = facts.get("distributions", {})  # type: ignore[assignment]
    markers: dict[str, str] = facts.get("markers", {})  # type: ignore[assignment]
    needs = engine.environment
    missing = [m for m in needs.distributions if env_locks.normalise(m) not in installed]
    problem: str | None = None
    if missing:
        problem = f"{', '.join(missing)} is not installed in {resolved.python}"
        if needs.missing_hint:
            problem += f": {needs.missing_hint}"
    elif not _lem_importable(resolved.python):
        problem = f"lem is not installed in {resolved.python} (lem env sync {engine.name} links it)"
    version = installed.get(env_locks.normalise(needs.engine_distribution))
    python_version = markers.get("python_full_version")
    lock = env_locks.lock_status(engine.name, facts)
    return EnvStatus(resolved, version, python_version, problem, lock)


def _lem_importable(python: str) -> bool:
    code = "import importlib.util as u, sys; sys.exit(u.find_spec('lem.workers') is None)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def environment_statuses() -> list[EnvStatus]:
    """Every known backend's resolved interpreter, probed."""
    return [probe_environment(info, resolve_python(name)) for name, info in KNOWN_BACKENDS.items()]


def lock_lines(lock: EngineLock | None) -> list[str]:
    """``lem env list``'s lines about a lock: which, its hash, matches or what differs."""
    if lock is None:
        return []
    if lock.name is None:
        return [f"  lock: none ({lock.unavailable_reason})"]
    head = f"  lock: {lock.name} sha256:{(lock.sha256 or '-')[:16]}"
    if lock.matches is None:
        return [f"{head} ({lock.unavailable_reason})"]
    engine = engine_of_lock(lock.name)
    how = (
        "made from it"
        if lock.made_from
        else "nearest of " + ", ".join(engine.environment.locks if engine else (lock.name,))
    )
    if lock.matches:
        return [f"{head}: matches ({how})"]
    lines = [f"{head}: differs ({how}): {lock.summary}"]
    lines += [f"    {d}" for d in lock.differences[:SHOWN_DIFFERENCES]]
    if lock.difference_count > SHOWN_DIFFERENCES:
        lines.append(f"    … and {lock.difference_count - SHOWN_DIFFERENCES} more")
    return lines


def render_env_list(statuses: list[EnvStatus]) -> list[str]:
    """The ``lem env list`` lines: a block per backend (one fact a line, never folded)."""
    lines = []
    for status in statuses:
        engine = KNOWN_BACKENDS[status.resolved.backend]
        name = engine.name + (" (experimental)" if engine.experimental else "")
        lines.append(f"{name}: {'usable' if status.usable else 'cannot run'}")
        if engine.environment.experimental_note:
            lines.append(f"  experimental: {engine.environment.experimental_note}")
        lines.append(f"  from: {status.resolved.source} ({status.resolved.detail})")
        python_version = f" (Python {status.python_version})" if status.python_version else ""
        lines.append(f"  python: {status.resolved.python}{python_version}")
        version = status.engine_version or "-"
        lines.append(f"  engine: {engine.environment.engine_distribution} {version}")
        lines += lock_lines(status.lock)
        if status.note:
            lines.append(f"  note: {status.note}")
        if status.problem:
            lines.append(f"  why: {status.problem}")
    return lines


@dataclass
class SyncPlan:
    """What ``lem env sync`` will do: the lock, the folder, the tool and each command."""

    backend: str
    lock_name: str  # a shipped lock's name, or "custom" (--requirements FILE)
    lock_file: Path
    lock_sha256: str
    base_python: str
    python_version: str
    folder: Path
    tool: str  # "uv" or "pip"
    up_to_date: bool
    commands: list[list[str]] = field(default_factory=list)

    def steps(self) -> list[str]:
        """Each step as one line, in order (for --dry-run and the log)."""
        lines = [" ".join(command) for command in self.commands]
        lines.append(f"link lem's code {lem_package_dirs()['lem']} into {self.folder} ({LINK_PTH})")
        return lines


def _python_version_of(python: str) -> str:
    """``X.Y`` of ``python`` (this interpreter's without a subprocess)."""
    if python == sys.executable:
        return current_python_version()
    code = "import platform; print('.'.join(platform.python_version_tuple()[:2]))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


class SyncRefused(BadInput):
    """``lem env sync`` cannot make this environment (bad input: exit 2); ``str`` says why."""


def _lock_file(backend: str, variant: str | None) -> tuple[str, Path]:
    """The shipped lock ``backend`` gets (``variant``: gpu/cpu, else by the driver here)."""
    locks = known_backend(backend).environment.locks
    if variant is None:
        name = default_lock(backend)
    else:
        wanted = [n for n in locks if n.endswith("-cpu") == (variant == "cpu")]
        if not wanted:
            raise SyncRefused(
                f"backend {backend!r} has no {variant} lock (locks: {', '.join(locks)})"
            )
        name = wanted[0]
    lock = read_lock(name)
    if lock.text is None:
        raise SyncRefused(
            f"{backend}: lem ships no lock for it: {lock.unresolved_reason} "
            "(--requirements FILE installs from a file of your own)"
        )
    path = Path(str(env_locks.locks_root().joinpath(name, env_locks.LOCK_FILE)))
    if not path.is_file():  # a zipped install: copy the lock out
        path = cache_dir() / f"{name}-{lock.sha256}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lock.text)
    return name, path


def plan_sync(
    backend: str,
    requirements: Path | None = None,
    base_python: str | None = None,
    offline: bool = False,
    force: bool = False,
    variant: str | None = None,
) -> SyncPlan:
    """The environment ``backend`` gets and the commands that make it: exactly its lock
    (hash-checked), or ``requirements`` (a file of the user's own, as written).

    ``offline``: no package index (uv's cache, or pip's ``--find-links``, must hold all)."""
    known_backend(backend)
    if requirements is not None:
        if not requirements.is_file():
            raise SyncRefused(f"{requirements}: no such requirements file")
        lock_name, path = "custom", requirements
    else:
        lock_name, path = _lock_file(backend, variant)
    data = path.read_bytes()
    base = base_python or sys.executable
    version = _python_version_of(base)
    folder = venv_dir(
        lock_name if lock_name != "custom" else f"{backend}-custom", data, version, cache_dir()
    )
    done = (folder / MARKER_NAME).is_file() and venv_python(folder).exists()
    python = str(venv_python(folder))
    uv = shutil.which("uv")
    plan = SyncPlan(
        backend, lock_name, path, hashlib.sha256(data).hexdigest(), base, version, folder,
        "uv" if uv else "pip", done and not force,
    )  # fmt: skip
    hashed = lock_name != "custom"
    offline_args = (["--offline"] if uv else ["--no-index"]) if offline else []
    if uv:
        plan.commands.append([uv, "venv", "--python", base, str(folder)])
        install = [uv, "pip", "install", "--python", python, *offline_args]
    else:
        plan.commands.append([base, "-m", "venv", str(folder)])
        install = [python, "-m", "pip", "install", "--no-input", *offline_args]
    if hashed and uv:  # exactly the lock: sync removes anything else
        sync = [uv, "pip", "sync", "--python", python, *offline_args]
        plan.commands.append(
            [*sync, "--require-hashes", "--index-strategy", "unsafe-best-match", str(path)]
        )
    elif hashed:
        plan.commands.append([*install, "--require-hashes", "--no-deps", "-r", str(path)])
    else:  # a file of the user's own, and lem's own needs, which such a file may not name
        requires = metadata.requires("lem") or []
        needs = [r.split(";")[0].strip() for r in requires if "extra ==" not in r]
        plan.commands += [[*install, "-r", str(path)], [*install, *needs]]
    return plan


def link_lem_source(folder: Path) -> None:
    """Make ``lem`` importable in the environment at ``folder`` from the code this
    coordinator runs (so worker and coordinator always speak one protocol): a ``lem/``
    folder of links and a ``.pth`` naming it. lem's own needs come from the lock."""
    tree = folder / "lem-source"
    (tree / "lem").mkdir(parents=True, exist_ok=True)
    dirs = lem_package_dirs()
    (tree / "lem" / "__init__.py").symlink_to(dirs.pop("lem"))
    for name, path in dirs.items():
        (tree / "lem" / name).symlink_to(path)
    for site in (folder / "lib").glob("python*/site-packages"):
        (site / LINK_PTH).write_text(f"{tree}\n")


def run_sync(plan: SyncPlan) -> None:
    """Make ``plan.folder`` (removing an unfinished or forced one) and write its marker
    last, so a half-made environment is never resolved. Raises ``CalledProcessError``."""
    if plan.folder.is_symlink() or (plan.folder.exists() and not plan.folder.is_dir()):
        raise SyncRefused(f"{plan.folder} exists and is not a folder lem made: not replaced")
    if plan.folder.exists():
        shutil.rmtree(plan.folder)
    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    for command in plan.commands:
        click.echo(f"$ {' '.join(command)}", err=True)
        subprocess.run(command, check=True, stdout=sys.stderr)
    link_lem_source(plan.folder)
    marker = {
        "backend": plan.backend,
        "lock": plan.lock_name,
        "lock_sha256": plan.lock_sha256,
        "lock_file": str(plan.lock_file),
        "python_version": plan.python_version,
        "base_python": plan.base_python,
        "tool": plan.tool,
        "source": "lem env sync",
        "synced_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (plan.folder / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


@click.group("env")
def env_group() -> None:
    """Per-backend worker environments (explicit, Nix, synced from a lock, or this Python)."""


@env_group.command("list")
def env_list() -> None:
    """Where each backend's worker Python comes from, its engine, its lock, and why not."""
    for line in render_env_list(environment_statuses()):
        click.echo(line)


@env_group.command("sync")
@click.argument("backend")
@click.option(
    "--variant",
    type=click.Choice(["gpu", "cpu"]),
    default=None,
    help=f"Which lock ({', '.join(CPU_TWINNED)}: CUDA or CPU build); default: gpu where an "
    "NVIDIA driver is loaded.",
)
@click.option(
    "--requirements",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Install this requirements file instead of lem's lock (recorded as 'custom').",
)
@click.option("--python", "base_python", default=None, help="Base interpreter (default: this).")
@click.option(
    "--offline", is_flag=True, help="No package index: from uv's cache or pip's find-links."
)
@click.option("--force", is_flag=True, help="Remake the environment even if it is up to date.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def env_sync(
    backend: str,
    variant: str | None,
    requirements: Path | None,
    base_python: str | None,
    offline: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Make (or reuse) BACKEND's virtual environment: exactly its lock, hash-checked."""
    try:
        plan = plan_sync(backend, requirements, base_python, offline, force, variant)
    except (KeyError, subprocess.CalledProcessError, OSError) as exc:  # SyncRefused: bad input
        bad_input(exc.args[0] if isinstance(exc, KeyError) else str(exc))
    click.echo(f"{backend}: {plan.folder} (Python {plan.python_version}, {plan.tool})")
    click.echo(f"  lock: {plan.lock_name} {plan.lock_file} sha256:{plan.lock_sha256[:16]}")
    if plan.up_to_date:
        click.echo("  up to date: reused (--force remakes it)")
        return
    for step in plan.steps():
        click.echo(f"  {'would run' if dry_run else 'run'}: {step}")
    if dry_run:
        return
    try:
        run_sync(plan)  # SyncRefused: bad input
    except (subprocess.CalledProcessError, OSError) as exc:
        raise LemError(f"{backend} environment not made: {exc}") from exc
    click.echo(f"  done: {venv_python(plan.folder)}")
