"""``lem env list`` and ``lem env sync BACKEND``: per-backend worker environments.

Engines are never imported here: each interpreter is asked about itself in a subprocess
(``importlib.util.find_spec`` and ``importlib.metadata.version``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from lem.coordinator.environments import (
    KNOWN_BACKENDS,
    MARKER_NAME,
    BackendInfo,
    ResolvedPython,
    cache_dir,
    current_python_version,
    known_backend,
    repo_root,
    requirements_path,
    resolve_python,
    venv_dir,
    venv_python,
)

PROBE_TIMEOUT_S = 60.0
LINK_PTH = "lem-source.pth"
LEM_PACKAGES = ("protocol", "coordinator", "workers")
# Run in the backend's interpreter: which modules are missing, the engine's version, lem.
PROBE_SCRIPT = """\
import importlib.metadata as m, importlib.util as u, json, platform, sys
modules, dist = sys.argv[1].split(","), sys.argv[2]
def found(name):
    try:
        return u.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
try:
    version = m.version(dist)
except m.PackageNotFoundError:
    version = None
print(json.dumps({"python_version": platform.python_version(),
    "missing": [x for x in modules if not found(x)], "engine_version": version,
    "lem": found("lem.workers")}))
"""


@dataclass(frozen=True)
class EnvStatus:
    """One backend's row of ``lem env list``."""

    resolved: ResolvedPython
    engine_version: str | None
    python_version: str | None
    problem: str | None  # None: a worker can start there

    @property
    def usable(self) -> bool:
        return self.problem is None


def probe_environment(info: BackendInfo, resolved: ResolvedPython) -> EnvStatus:
    """Ask ``resolved.python`` whether it can run ``info``'s worker; never raises."""
    python = resolved.python
    try:
        done = subprocess.run(
            [python, "-c", PROBE_SCRIPT, ",".join(info.modules), info.engine_distribution],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EnvStatus(resolved, None, None, f"cannot run {python}: {exc}")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return EnvStatus(resolved, None, None, f"{python} is not a working Python: {last}")
    problem = None
    if report["missing"]:
        problem = f"{', '.join(report['missing'])} is not installed in {python}"
        if info.missing_hint:
            problem += f": {info.missing_hint}"
    elif not report["lem"]:
        problem = f"lem is not installed in {python} (lem env sync {info.name} installs it)"
    return EnvStatus(resolved, report["engine_version"], report["python_version"], problem)


def environment_statuses() -> list[EnvStatus]:
    """Every known backend's resolved interpreter, probed."""
    return [probe_environment(info, resolve_python(name)) for name, info in KNOWN_BACKENDS.items()]


def render_env_list(statuses: list[EnvStatus]) -> list[str]:
    """The ``lem env list`` lines: a block per backend (one fact a line, never folded)."""
    lines = []
    for status in statuses:
        info = KNOWN_BACKENDS[status.resolved.backend]
        name = info.name + (" (experimental)" if info.experimental else "")
        lines.append(f"{name}: {'usable' if status.usable else 'cannot run'}")
        if info.experimental_note:
            lines.append(f"  experimental: {info.experimental_note}")
        lines.append(f"  from: {status.resolved.source} ({status.resolved.detail})")
        python_version = f" (Python {status.python_version})" if status.python_version else ""
        lines.append(f"  python: {status.resolved.python}{python_version}")
        lines.append(f"  engine: {info.engine_distribution} {status.engine_version or '-'}")
        if status.problem:
            lines.append(f"  why: {status.problem}")
    return lines


@dataclass
class SyncPlan:
    """What ``lem env sync`` will do: the folder, the tool and each command in order."""

    backend: str
    requirements: Path
    base_python: str
    python_version: str
    folder: Path
    tool: str  # "uv" or "pip"
    up_to_date: bool
    commands: list[list[str]] = field(default_factory=list)
    link_lem: bool = False  # offline: put lem's source on the path instead of installing it

    def steps(self) -> list[str]:
        """Each step as one line, in order (for --dry-run and the log)."""
        lines = [" ".join(command) for command in self.commands]
        if self.link_lem:
            lines.append(f"link lem's source {repo_root()} into {self.folder} ({LINK_PTH})")
        return lines


def _python_version_of(python: str) -> str:
    """``X.Y`` of ``python`` (this interpreter's without a subprocess)."""
    if python == sys.executable:
        return current_python_version()
    code = "import platform; print('.'.join(platform.python_version_tuple()[:2]))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _has_requirements(path: Path) -> bool:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return any(line and not line.startswith("-") for line in lines)


def plan_sync(
    backend: str,
    requirements: Path | None = None,
    base_python: str | None = None,
    offline: bool = False,
    force: bool = False,
) -> SyncPlan:
    """The environment ``backend`` gets and the commands that make it.

    ``offline``: no package index, and lem is linked from its source (no build, no
    dependencies): the requirements file must name, with ``--find-links``, all else.
    """
    known_backend(backend)
    path = requirements or requirements_path(backend)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no requirements file for backend {backend!r}")
    base = base_python or sys.executable
    version = _python_version_of(base)
    folder = venv_dir(backend, path.read_bytes(), version, cache_dir())
    done = (folder / MARKER_NAME).is_file() and venv_python(folder).exists()
    python = str(venv_python(folder))
    uv = shutil.which("uv")
    plan = SyncPlan(backend, path, base, version, folder, "uv" if uv else "pip", done and not force)
    offline_args = ["--no-index"] if offline else []
    if uv:
        install = [uv, "pip", "install", "--python", python, *(["--offline"] if offline else [])]
        plan.commands.append([uv, "venv", "--seed", "--python", base, str(folder)])
    else:
        install = [python, "-m", "pip", "install", *offline_args]
        plan.commands.append([base, "-m", "venv", str(folder)])
    if _has_requirements(path):
        plan.commands.append([*install, "-r", str(path)])
    if offline:
        plan.link_lem = True
    else:
        plan.commands.append([*install, "-e", str(repo_root())])
    return plan


def link_lem_source(folder: Path) -> None:
    """Make ``lem`` importable in the environment at ``folder`` from this source tree: a
    ``lem/`` folder of links (setuptools' package-dir mapping) and a ``.pth`` naming it."""
    tree = folder / "lem-source"
    (tree / "lem").mkdir(parents=True, exist_ok=True)
    for name in LEM_PACKAGES:
        (tree / "lem" / name).symlink_to(repo_root() / name)
    for site in (folder / "lib").glob("python*/site-packages"):
        (site / LINK_PTH).write_text(f"{tree}\n")


def run_sync(plan: SyncPlan) -> None:
    """Make ``plan.folder`` (removing an unfinished or forced one) and write its marker
    last, so a half-made environment is never resolved. Raises ``CalledProcessError``."""
    if plan.folder.exists():
        shutil.rmtree(plan.folder)
    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    for command in plan.commands:
        click.echo(f"$ {' '.join(command)}", err=True)
        subprocess.run(command, check=True, stdout=sys.stderr)
    if plan.link_lem:
        link_lem_source(plan.folder)
    marker = {
        "backend": plan.backend,
        "requirements": str(plan.requirements),
        "python_version": plan.python_version,
        "base_python": plan.base_python,
        "tool": plan.tool,
        "synced_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (plan.folder / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


@click.group("env")
def env_group() -> None:
    """Per-backend worker environments (explicit, Nix, synced venv, or this Python)."""


@env_group.command("list")
def env_list() -> None:
    """Where each backend's worker Python comes from, its engine version, and why not."""
    for line in render_env_list(environment_statuses()):
        click.echo(line)


@env_group.command("sync")
@click.argument("backend")
@click.option(
    "--requirements",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Requirements file (default: envs/BACKEND.txt).",
)
@click.option("--python", "base_python", default=None, help="Base interpreter (default: this).")
@click.option("--offline", is_flag=True, help="No package index; lem without its dependencies.")
@click.option("--force", is_flag=True, help="Remake the environment even if it is up to date.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def env_sync(
    backend: str,
    requirements: Path | None,
    base_python: str | None,
    offline: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Create (or reuse) BACKEND's virtual environment from its requirements file."""
    try:
        plan = plan_sync(backend, requirements, base_python, offline, force)
    except (KeyError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        click.echo(f"lem: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", err=True)
        sys.exit(2)
    click.echo(f"{backend}: {plan.folder} (Python {plan.python_version}, {plan.tool})")
    click.echo(f"  requirements: {plan.requirements}")
    if plan.up_to_date:
        click.echo("  up to date: reused (--force remakes it)")
        return
    for step in plan.steps():
        click.echo(f"  {'would run' if dry_run else 'run'}: {step}")
    if dry_run:
        return
    try:
        run_sync(plan)
    except subprocess.CalledProcessError as exc:
        click.echo(f"lem: error: {backend} environment not made: {exc}", err=True)
        sys.exit(1)
    click.echo(f"  done: {venv_python(plan.folder)}")
