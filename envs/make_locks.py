"""``make lock`` / ``make lock-check``: every engine environment's lock, from its input.

Layout (one folder per environment under ``envs/``):

- ``<env>/pyproject.toml``: the declared input (engine versions lem is written and tested
  against, plus ``lem`` itself from the repository root for the worker's own needs).
- ``<env>/uv.lock``: uv's lock of it for Linux x86_64 (every wheel's URL and SHA-256): what
  Nix builds from (uv2nix).
- ``<env>/requirements.txt``: the same lock as a hash-pinned pip requirements file
  (``uv export``), what ``lem env sync`` installs (``--require-hashes``).
- ``pytorch-cpu/requirements.txt``: derived from ``pytorch/uv.lock``: the same resolution
  with PyTorch's CPU build of the same torch (``torch-cpu-wheels.txt``: its wheels' SHA-256)
  and without the packages only the CUDA build needs.
- ``<env>/UNRESOLVED.txt``: where an input cannot be locked here, the exact reason.

``python envs/make_locks.py lock`` (re)makes them; ``check`` exits 1 when a lock is stale
against its input (``uv lock --check``, and each export compared byte for byte). Needs uv.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ENVS = Path(__file__).resolve().parent
# Environments locked by uv: every folder here with an input (a new engine's lock folder
# needs no entry here).
UV_LOCKED = tuple(sorted(p.parent.name for p in ENVS.glob("*/pyproject.toml")))
CPU_TWIN = ("pytorch", "pytorch-cpu")  # the CUDA lock and its derived CPU variant
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# torch's requirements that only the CUDA build has (the CPU build's METADATA lacks them).
GPU_ONLY = re.compile(r"(nvidia-.*|cuda-.*|triton)")
EXPORT_ARGS = (
    "--frozen",
    "--no-emit-project",
    "--no-emit-package",
    "lem",
    "--no-header",
    "--no-annotate",
)
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(==|\s@\s)")


def uv(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run uv in ``cwd``, without downloading any interpreter."""
    env_args = ["--no-python-downloads"]
    return subprocess.run(
        ["uv", *args, *env_args], cwd=cwd, capture_output=True, text=True, check=False
    )


def export(env: str) -> str:
    """``<env>/uv.lock`` as a hash-pinned requirements file."""
    done = uv(["export", *EXPORT_ARGS, "--format", "requirements-txt"], ENVS / env)
    if done.returncode != 0:
        raise SystemExit(f"uv export {env}: {done.stderr.strip()}")
    return header(env) + done.stdout


def header(env: str, derived_from: str | None = None) -> str:
    source = f"{derived_from}/uv.lock (see make_locks.py)" if derived_from else "uv.lock"
    return (
        f"# lem's {env} worker environment, locked: generated from {source} by\n"
        "# `make lock` (envs/make_locks.py); do not edit. `lem env sync` installs exactly this.\n"
    )


def split_entries(text: str) -> list[tuple[str | None, list[str]]]:
    """An export's requirement entries: (normalised name or None, its lines)."""
    entries: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        if line[:1].isspace() and entries:
            entries[-1][1].append(line)
            continue
        found = REQUIREMENT.match(line)
        name = re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else None
        entries.append((name, [line]))
    return entries


def cpu_torch_wheels(version: str) -> list[str]:
    """SHA-256 digests of PyTorch's CPU wheels of ``version`` (``torch-cpu-wheels.txt``)."""
    digests = []
    for line in (ENVS / "pytorch-cpu" / "torch-cpu-wheels.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            if name.startswith(f"torch-{version}+cpu-"):
                digests.append(digest)
    return digests


def cpu_variant(gpu_env: str, cpu_env: str) -> str:
    """The CPU twin of ``gpu_env``'s lock: torch ``X+cpu`` from PyTorch's CPU index, and only
    the packages still reachable from the input once torch needs no CUDA package."""
    lock = tomllib.loads((ENVS / gpu_env / "uv.lock").read_text())
    graph = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    versions = {p["name"]: p["version"] for p in lock["package"]}
    graph["torch"] = [d for d in graph["torch"] if not GPU_ONLY.fullmatch(d)]
    keep: set[str] = set()
    todo = list(graph[f"lem-env-{gpu_env}"])
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(graph.get(name, []))
    digests = cpu_torch_wheels(versions["torch"])
    if not digests:
        raise SystemExit(
            f"no CPU wheel of torch {versions['torch']} in pytorch-cpu/torch-cpu-wheels.txt: "
            f"add its sha256sum lines from {CPU_INDEX}/torch/"
        )
    torch = [f"torch=={versions['torch']}+cpu \\"]
    torch += [
        f"    --hash=sha256:{d}" + (" \\" if i < len(digests) - 1 else "")
        for i, d in enumerate(digests)
    ]
    lines = [f"--extra-index-url {CPU_INDEX}"]
    for name, entry in split_entries(export(gpu_env)):
        if name == "torch":
            lines += torch
        elif name is not None and name in keep:
            lines += entry
    return header(cpu_env, derived_from=gpu_env) + "\n".join(lines) + "\n"


def unresolved_note(env: str, stderr: str) -> str:
    """Why an input did not lock, kept beside it: one line (read by ``lem env list`` and
    ``lem env sync``), then uv's own error lines as comments."""
    wanted = ("error:", "cause:", "hint:", "cannot download")
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith(wanted)]
    causes = [line.removeprefix("cause:").strip() for line in lines if line.startswith("cause:")]
    error = next(
        (line.removeprefix("error:").strip() for line in lines if line.startswith("error:")), ""
    )
    reason = f"`uv lock` failed here: {re.sub(r' in [0-9.]+s$', '', error)}"
    if causes:
        reason += f" ({causes[0]}: {causes[-1]})"
    return reason + "\n" + "".join(f"# {line}\n" for line in lines[:12])


def lock() -> int:
    for env in UV_LOCKED:
        done = uv(["lock"], ENVS / env)
        note = ENVS / env / "UNRESOLVED.txt"
        if done.returncode != 0:
            note.write_text(unresolved_note(env, done.stderr))
            (ENVS / env / "requirements.txt").unlink(missing_ok=True)
            print(f"{env}: not locked (envs/{env}/UNRESOLVED.txt)")
            continue
        note.unlink(missing_ok=True)
        (ENVS / env / "requirements.txt").write_text(export(env))
        print(f"{env}: locked")
    gpu_env, cpu_env = CPU_TWIN
    (ENVS / cpu_env / "requirements.txt").write_text(cpu_variant(gpu_env, cpu_env))
    print(f"{cpu_env}: derived from {gpu_env}")
    return 0


def check() -> int:
    stale = []
    for env in UV_LOCKED:
        if (ENVS / env / "UNRESOLVED.txt").is_file():
            print(f"{env}: not locked here (UNRESOLVED.txt); skipped")
            continue
        done = uv(["lock", "--check", "--offline"], ENVS / env)
        if done.returncode != 0:
            stale.append(f"{env}/uv.lock is stale against {env}/pyproject.toml")
        elif (ENVS / env / "requirements.txt").read_text() != export(env):
            stale.append(f"{env}/requirements.txt differs from `uv export` of {env}/uv.lock")
    gpu_env, cpu_env = CPU_TWIN
    if (ENVS / cpu_env / "requirements.txt").read_text() != cpu_variant(gpu_env, cpu_env):
        stale.append(f"{cpu_env}/requirements.txt differs from its derivation")
    for line in stale:
        print(f"stale: {line} (run `make lock`)")
    if not stale:
        print("locks: every lock matches its input")
    return 1 if stale else 0


if __name__ == "__main__":
    commands = {"lock": lock, "check": check}
    if sys.argv[1:] not in ([name] for name in commands):
        print(f"usage: {sys.argv[0]} lock|check", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
