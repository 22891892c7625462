"""Checks lem's flake wiring with its inputs replaced by stand-ins (run by nix/check-flake.sh).

Every flake input is replaced by a local stand-in (tests/nix/stand-ins): nothing is fetched
or built. The outputs are evaluated and instantiated, and their derivations (`nix
show-derivation`) are checked against lem's own files:

- the outputs exist (packages.x86_64-linux.{lem-coordinator, worker-pytorch,
  worker-pytorch-cpu, worker-vllm, worker-tensorrt}, apps.x86_64-linux.lem, the dev shell);
- the `lem` wrapper exports LEM_NIX_WORKER_DRVS with each runnable worker's .drv, holds
  those .drv files as plain sources, and neither it nor the dev shell needs any worker
  output, torch, vLLM, CUDA or TensorRT to build (their inputDrvs closure);
- the coordinator's Python holds lem, its runtime dependencies and the analysis and report
  extras (pyproject.toml), lem built from the filtered lem sources;
- each worker environment is built from its lock: every wheel's URL and SHA-256 are the
  uv.lock's, the package set is the lock's export (envs/<lock>/requirements.txt) for
  CPython 3.13 on Linux x86_64; the CPU twin has PyTorch's CPU torch (URL, SHA-256 from
  envs/pytorch-cpu/torch-cpu-wheels.txt) and no nvidia-*, cuda-* or triton package (but
  lem's own nvidia-ml-py, NVML's pure-Python bindings);
- each worker writes $out/lem-env.json naming its backend, its lock and the SHA-256 of that
  lock's requirements.txt, and checks that its $out/bin/python imports lem.workers;
- worker-tensorrt evaluates, and without envs/tensorrt/uv.lock its build fails saying so.

Exit status 1 with one line per failed check; 0 when all hold.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

SYSTEM = "x86_64-linux"
PYTHON_VERSION = "3.13"  # python3 of the pinned nixpkgs (and of the nixpkgs stand-in)
WORKERS = {  # package attribute -> (lock, backend, workspace its uv.lock is in)
    "worker-pytorch": ("pytorch", "pytorch", "pytorch"),
    "worker-pytorch-cpu": ("pytorch-cpu", "pytorch", "pytorch"),
    "worker-vllm": ("vllm", "vllm", "vllm"),
}
GPU_ONLY = re.compile(r"(nvidia-.*|cuda-.*|triton)")  # envs/make_locks.py's GPU_ONLY
# What the coordinator and the dev shell must not need: engines, CUDA, workers.
FORBIDDEN = re.compile(
    r"torch|vllm|triton|cuda|cudnn|nccl|tensorrt|nvidia-(?!ml-py)|lem-worker-", re.IGNORECASE
)
# One requirement of a `uv export`: name==version, and its marker.
EXPORT_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?==\S+(?: ; (.*?))?(?: \\)?$")
MARKER_CLAUSE = re.compile(r"\s*([a-z_]+) (==|!=|<=|>=|<|>) '([^']*)'\s*")
ENVIRONMENT = {
    "python_full_version": PYTHON_VERSION + ".0",
    "python_version": PYTHON_VERSION,
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
}


class Checks:
    """Collects failed checks; each is one line."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def run_nix(nix: list[str], args: list[str], flags: list[str] | None = None) -> str:
    """``nix SUBCOMMAND`` with the flake flags (overrides) after the subcommand."""
    command = [*nix, args[0], *(flags or []), *args[1:]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"check-flake: `nix {' '.join(args[:2])}` failed:\n{done.stderr.strip()}")
    return done.stdout


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def clause_holds(variable: str, op: str, wanted: str) -> bool:
    value = ENVIRONMENT[variable]
    if op in ("==", "!="):
        prefix = wanted.endswith(".*")
        equal = (value + ".").startswith(wanted[:-1]) if prefix else value == wanted
        return equal == (op == "==")
    a, b = version_key(value), version_key(wanted)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def marker_holds(marker: str) -> bool:
    """A PEP 508 marker (clauses, and, or, parentheses) for CPython 3.13 on x86_64 Linux."""
    tokens = re.findall(r"\(|\)|\band\b|\bor\b|[a-z_]+ (?:==|!=|<=|>=|<|>) '[^']*'", marker)
    if "".join(tokens).replace(" ", "") != marker.replace(" ", ""):
        raise SystemExit(f"check-flake: marker not supported: {marker}")
    position = 0

    def expression() -> bool:  # or of ands
        nonlocal position
        value = conjunction()
        while position < len(tokens) and tokens[position] == "or":
            position += 1
            value = conjunction() or value
        return value

    def conjunction() -> bool:
        nonlocal position
        value = atom()
        while position < len(tokens) and tokens[position] == "and":
            position += 1
            value = atom() and value
        return value

    def atom() -> bool:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = expression()
            position += 1  # ")"
            return value
        found = MARKER_CLAUSE.fullmatch(token)
        if found is None:
            raise SystemExit(f"check-flake: marker not supported: {marker}")
        return clause_holds(*found.groups())

    return expression()


def exported_names(requirements: Path) -> set[str]:
    """The distributions a requirements export installs on CPython 3.13, Linux x86_64."""
    names = set()
    for line in requirements.read_text().splitlines():
        found = EXPORT_LINE.match(line)
        if found and (found.group(2) is None or marker_holds(found.group(2))):
            names.add(re.sub(r"[-_.]+", "-", found.group(1)).lower())
    return names


def some(items: list[str], limit: int = 6) -> str:
    """A list for a message: its first few items and how many more."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def env_strings(drv: dict[str, Any]) -> list[str]:
    """A derivation's environment as strings, structured attributes (__json) unpacked."""
    values = list(drv["env"].values())
    todo: list[Any] = [json.loads(drv["env"]["__json"])] if "__json" in drv["env"] else []
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            values.append(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return values


def drv_text(drv: dict[str, Any]) -> str:
    return "\n".join(env_strings(drv))


def drv_name(path: str) -> str:
    return path.split("-", 1)[1].removesuffix(".drv")


def build_closure(drvs: dict[str, Any], start: str) -> set[str]:
    """Derivations whose outputs building ``start`` needs (inputDrvs, not plain sources)."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(drvs[path]["inputDrvs"])
    return seen


def wrapper_entries(text: str) -> dict[str, str] | None:
    found = re.search(r'LEM_NIX_WORKER_DRVS="([^"]*)"', text)
    if found is None:
        return None
    return dict(entry.split("=", 1) for entry in found.group(1).split(":") if "=" in entry)


def check_free_of_engines(
    checks: Checks, drvs: dict[str, Any], start: str, what: str, worker_outs: set[str]
) -> None:
    closure = build_closure(drvs, start)
    bad = sorted(drv_name(path) for path in closure if FORBIDDEN.search(drv_name(path)))
    checks.check(not bad, f"{what} needs engine, CUDA or worker derivations to build: {some(bad)}")
    leaks = sorted(
        {
            out
            for path in closure
            for value in env_strings(drvs[path])
            for out in worker_outs
            if out in value
        }
    )
    checks.check(not leaks, f"{what} references worker outputs: {some(leaks)}")


def lock_wheels(uv_lock: Path) -> dict[str, str]:
    """Every wheel URL of a uv.lock with its SHA-256 (hex)."""
    lock = tomllib.loads(uv_lock.read_text())
    return {
        wheel["url"]: wheel["hash"].removeprefix("sha256:")
        for package in lock["package"]
        for wheel in package.get("wheels", [])
    }


def cpu_torch_wheel(root: Path, version: str) -> tuple[str, str]:
    """URL and SHA-256 of PyTorch's CPU torch ``version`` for CPython 3.13."""
    tag = "cp" + PYTHON_VERSION.replace(".", "")
    prefix = f"torch-{version}+cpu-{tag}-{tag}-manylinux"
    for line in (root / "envs/pytorch-cpu/torch-cpu-wheels.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].startswith(prefix) and parts[1].endswith("x86_64.whl"):
            url = "https://download.pytorch.org/whl/cpu/" + parts[1].replace("+", "%2B")
            return url, parts[0]
    raise SystemExit(f"check-flake: no {prefix}* line in envs/pytorch-cpu/torch-cpu-wheels.txt")


def check_worker(
    checks: Checks, root: Path, drvs: dict[str, Any], attr: str, drv_path: str
) -> None:
    lock, backend, workspace = WORKERS[attr]
    venv = drvs[drv_path]
    installed = set(venv["env"].get("NIX_PYPROJECT_DEPS", "").split(":"))
    packages = {}
    for path in venv["inputDrvs"]:
        drv = drvs[path]
        if any(output["path"] in installed for output in drv["outputs"].values()):
            packages[drv["env"]["pname"]] = drv
    names = set(packages)
    local = {"lem", f"lem-env-{workspace}"}
    wanted = exported_names(root / f"envs/{lock}/requirements.txt") | local
    checks.check(
        names == wanted,
        f"{attr}: packages differ from envs/{lock}/requirements.txt (CPython {PYTHON_VERSION}): "
        f"extra [{some(sorted(names - wanted))}], missing [{some(sorted(wanted - names))}]",
    )
    wheels = lock_wheels(root / f"envs/{workspace}/uv.lock")
    cpu = lock == "pytorch-cpu"
    for name, package in sorted(packages.items()):
        src = package["env"].get("src", "")
        if name in local:
            continue
        fetch = drvs.get(next((p for p in package["inputDrvs"] if p.endswith(".whl.drv")), ""))
        if fetch is None:
            checks.check(False, f"{attr}: {name} is not installed from a wheel")
            continue
        url, digest = fetch["env"].get("url", ""), fetch["outputs"]["out"].get("hash", "")
        checks.check(
            src == fetch["outputs"]["out"]["path"], f"{attr}: {name}'s src is not its wheel"
        )
        if cpu and name == "torch":
            version = package["env"]["version"].removesuffix("+cpu")
            checks.check(
                (url, digest) == cpu_torch_wheel(root, version),
                f"{attr}: torch is not PyTorch's CPU wheel from torch-cpu-wheels.txt: {url}",
            )
        else:
            checks.check(
                wheels.get(url) == digest,
                f"{attr}: {name}'s wheel is not envs/{workspace}/uv.lock's: {url} {digest}",
            )
    if cpu:
        # nvidia-ml-py (NVML's pure-Python bindings) is lem's own dependency, not torch's.
        gpu = sorted(n for n in names if GPU_ONLY.fullmatch(n) and n != "nvidia-ml-py")
        checks.check(not gpu, f"{attr}: CUDA-only packages in the CPU environment: {some(gpu)}")
    lem_src = packages["lem"]["env"].get("src", "") if "lem" in packages else ""
    checks.check(lem_src.endswith("-lem-source"), f"{attr}: lem not built from lem's sources")
    if Path(lem_src).is_dir():  # the filtered source holds every folder the wheel maps
        mapped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
        folders = mapped["package-dir"].values()
        absent = sorted(d for d in folders if not (Path(lem_src) / d).is_dir())
        checks.check(not absent, f"{attr}: lem's Nix source lacks mapped folders: {some(absent)}")

    script = drv_text(venv)
    found = re.search(r"'(\{\"backend\".*?\})'\s*>\s*\"\$out/lem-env\.json\"", script)
    if checks.check(found is not None, f"{attr}: does not write $out/lem-env.json"):
        assert found is not None
        marker = json.loads(found.group(1))
        digest = hashlib.sha256((root / f"envs/{lock}/requirements.txt").read_bytes()).hexdigest()
        expected = {"backend": backend, "lock": lock, "lock_sha256": digest, "source": "nix"}
        checks.check(marker == expected, f"{attr}: lem-env.json is {marker}, not {expected}")
    checks.check(
        "\"$out/bin/python\" -c 'import lem.workers'" in script,
        f"{attr}: its build does not check that $out/bin/python imports lem.workers",
    )


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    split = sys.argv.index("--flake-flags")
    nix, flags = sys.argv[2:split], sys.argv[split + 1 :]
    flake = str(root)
    checks = Checks()

    packages = json.loads(
        run_nix(
            nix,
            [
                "eval",
                "--json",
                f"{flake}#packages.{SYSTEM}",
                "--apply",
                "ps: builtins.mapAttrs (_: p: { inherit (p) drvPath name; out = p.outPath; }) ps",
            ],
            flags,
        )
    )
    apps = json.loads(run_nix(nix, ["eval", "--json", f"{flake}#apps.{SYSTEM}"], flags))
    shell = json.loads(
        run_nix(nix, ["eval", "--json", f"{flake}#devShells.{SYSTEM}.default.drvPath"], flags)
    )
    python = run_nix(
        nix,
        [
            "eval",
            "--raw",
            f"{flake}#packages.{SYSTEM}.worker-pytorch.passthru.pythonSet.python.pythonVersion",
        ],
        flags,
    )
    checks.check(
        python == PYTHON_VERSION,
        f"the flake's Python is {python}, not {PYTHON_VERSION} (the locks' requires-python "
        "<3.14 and this check's markers)",
    )
    for attr in ("lem-coordinator", *WORKERS, "worker-tensorrt"):
        checks.check(attr in packages, f"packages.{SYSTEM}.{attr} is missing")
    if checks.failed:
        return report(checks)
    coordinator = packages["lem-coordinator"]
    lem_app = apps.get("lem", {})
    checks.check(
        lem_app.get("type") == "app" and lem_app.get("program") == coordinator["out"] + "/bin/lem",
        f"apps.{SYSTEM}.lem does not run lem-coordinator's bin/lem: {lem_app}",
    )

    starts = [coordinator["drvPath"], shell, *(packages[a]["drvPath"] for a in WORKERS)]
    starts.append(packages["worker-tensorrt"]["drvPath"])
    drvs = json.loads(run_nix(nix, ["show-derivation", "--recursive", *starts]))

    # The wrapper: the workers' .drv files, none of their outputs.
    wrapper = drvs[coordinator["drvPath"]]
    entries = wrapper_entries(drv_text(wrapper))
    tensorrt_locked = (root / "envs/tensorrt/uv.lock").exists()
    expected = {lock: packages[attr]["drvPath"] for attr, (lock, _, _) in WORKERS.items()}
    if tensorrt_locked:
        expected["tensorrt"] = packages["worker-tensorrt"]["drvPath"]
    checks.check(
        entries == expected,
        f"the lem wrapper's LEM_NIX_WORKER_DRVS is {entries}, not the workers' .drv files "
        f"{expected}",
    )
    for drv in expected.values():
        checks.check(
            drv in wrapper["inputSrcs"] and drv not in wrapper["inputDrvs"],
            f"the lem wrapper must hold {drv} as a plain source (unsafeDiscardOutputDependency)",
        )
    worker_outs = {packages[attr]["out"] for attr in (*WORKERS, "worker-tensorrt")}
    check_free_of_engines(checks, drvs, coordinator["drvPath"], "lem-coordinator", worker_outs)
    check_free_of_engines(checks, drvs, shell, "the dev shell", worker_outs)
    checks.check(
        wrapper_entries(drv_text(drvs[shell])) == expected,
        "the dev shell does not export the wrapper's LEM_NIX_WORKER_DRVS",
    )

    # The coordinator's Python: lem and what pyproject.toml names, from nixpkgs.
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    closure_names = {drv_name(p) for p in build_closure(drvs, coordinator["drvPath"])}
    for requirement in [*project["dependencies"], *extras["analysis"], *extras["report"], "lem"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[^A-Za-z0-9._-]", requirement)[0]).lower()
        pattern = re.compile(rf"python3\.\d+-{re.escape(name)}(-\d.*)?")
        checks.check(
            any(pattern.fullmatch(n) for n in closure_names),
            f"lem-coordinator's Python lacks {name}",
        )
    lem_builds = [
        drvs[p]
        for p in build_closure(drvs, coordinator["drvPath"])
        if re.fullmatch(r"python3\.\d+-lem-.*", drv_name(p))
    ]
    checks.check(
        len(lem_builds) == 1 and lem_builds[0]["env"].get("src", "").endswith("-lem-source"),
        "lem-coordinator's lem is not built (once) from lem's sources",
    )

    for attr in WORKERS:
        check_worker(checks, root, drvs, attr, packages[attr]["drvPath"])

    tensorrt = drvs[packages["worker-tensorrt"]["drvPath"]]
    if not tensorrt_locked:
        script = drv_text(tensorrt)
        checks.check(
            "envs/tensorrt/uv.lock" in script and "exit 1" in script,
            "worker-tensorrt without envs/tensorrt/uv.lock must fail its build saying so",
        )
    return report(checks)


def report(checks: Checks) -> int:
    for line in checks.failed:
        print(f"check-flake: FAILED: {line}")
    print(f"check-flake: {checks.passed} checks passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
