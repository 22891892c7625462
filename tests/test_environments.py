"""Environment providers: which interpreter runs each backend's worker, ``lem env list``,
``lem env sync`` (a real venv from a tiny requirements file, offline) and a worker
started from an explicitly configured interpreter."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lem.coordinator.execution.environments import (
    MARKER_NAME,
    default_lock,
    env_key,
    find_synced_venv,
    gpu_driver_present,
    parse_nix_pythons,
    realise,
    resolve_python,
    venv_python,
)
from lem.coordinator.store.results_store import Store

SLEEP_BACKEND = "lem.workers.engines.sleep:SleepBackend"
REPO = Path(__file__).resolve().parents[1]


def fake_python(path: Path, marker: Path | None = None) -> Path:
    """A script that acts as Python (runs this one), noting each call in ``marker``."""
    note = f'echo "$@" >> {marker}\n' if marker is not None else ""
    path.write_text(f'#!/bin/sh\n{note}exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any interpreter setting, with a private env cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEM_")}
    env["LEM_ENV_CACHE_DIR"] = str(tmp_path / "cache")
    env.update(extra)
    return env


def lem(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def fake_locks(tmp_path: Path, **locks: str) -> Path:
    """A locks folder (``LEM_ENV_LOCKS_DIR``) with ``name=requirements text`` locks."""
    root = tmp_path / "locks"
    for name, text in locks.items():
        (root / name.replace("_", "-")).mkdir(parents=True)
        (root / name.replace("_", "-") / "requirements.txt").write_text(text)
    return root


def synced_venv(root: Path, lock: str, text: str, version: str = "3.11") -> Path:
    """A fake environment made by ``lem env sync`` from ``text`` (its marker written)."""
    venv = root / f"{lock}-{env_key(text.encode(), version)}"
    venv_python(venv).parent.mkdir(parents=True)
    fake_python(venv_python(venv))
    marker = {"lock": lock, "python_version": version}
    marker["lock_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (venv / MARKER_NAME).write_text(json.dumps(marker))
    return venv


def test_resolution_order_explicit_then_nix_then_venv_then_current(tmp_path: Path) -> None:
    explicit = str(fake_python(tmp_path / "explicit-python"))
    legacy = str(fake_python(tmp_path / "legacy-python"))
    nix = str(fake_python(tmp_path / "nix-python"))
    locks = fake_locks(tmp_path, vllm="vllm==0.33.0\n")
    venv = synced_venv(tmp_path / "cache", "vllm", "vllm==0.33.0\n")
    env = clean_env(
        tmp_path,
        LEM_ENV_LOCKS_DIR=str(locks),
        LEM_VLLM_PYTHON=explicit,
        LEM_PYTHON_VLLM=legacy,
        LEM_NIX_WORKER_PYTHONS=f"pytorch=/nix/store/x/bin/python:vllm={nix}",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEM_ENV_LOCKS_DIR", str(locks))
        got = resolve_python("vllm", env)
        assert (got.source, got.python, got.detail) == ("explicit", explicit, "LEM_VLLM_PYTHON")
        del env["LEM_VLLM_PYTHON"]
        assert resolve_python("vllm", env).python == legacy  # the older spelling still works
        del env["LEM_PYTHON_VLLM"]
        got = resolve_python("vllm", env)
        assert (got.source, got.python) == ("nix", nix)
        env["LEM_NIX_WORKER_PYTHONS"] = "pytorch=/nix/store/x/bin/python"
        got = resolve_python("vllm", env)
        assert (got.source, got.python) == ("venv", str(venv_python(venv)))
        (locks / "vllm" / "requirements.txt").write_text("vllm==0.34.0\n")  # a new lock
        got = resolve_python("vllm", env)  # the old environment is not this lock's
        assert (got.source, got.python) == ("current", sys.executable)


def test_pytorch_takes_the_cpu_lock_without_a_driver_and_the_cuda_lock_with_one(
    tmp_path: Path,
) -> None:
    locks = fake_locks(tmp_path, pytorch="torch==2.13.0\n", pytorch_cpu="torch==2.13.0+cpu\n")
    gpu = synced_venv(tmp_path / "cache", "pytorch", "torch==2.13.0\n")
    cpu = synced_venv(tmp_path / "cache", "pytorch-cpu", "torch==2.13.0+cpu\n")
    env = clean_env(tmp_path, LEM_ENV_LOCKS_DIR=str(locks))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEM_ENV_LOCKS_DIR", str(locks))
        assert default_lock("pytorch", gpu=False) == "pytorch-cpu"
        assert default_lock("pytorch", gpu=True) == "pytorch"
        assert default_lock("vllm", gpu=False) == "vllm"  # no CPU twin: its one lock
        assert resolve_python("pytorch", env, gpu=False).detail == str(cpu)
        assert resolve_python("pytorch", env, gpu=True).detail == str(gpu)
        (gpu / MARKER_NAME).unlink()  # unfinished: never resolved
        assert resolve_python("pytorch", env, gpu=True).detail == str(cpu)
    assert not gpu_driver_present(tmp_path / "no-such-file")
    assert gpu_driver_present(locks / "pytorch" / "requirements.txt")


def test_nix_derivations_are_built_on_first_use_only(tmp_path: Path) -> None:
    """The flake's wrapper names worker derivations; lem builds the one it needs, when it
    needs it (a stand-in nix-store on PATH records each call)."""
    out = tmp_path / "store" / "worker-pytorch-cpu"
    calls = tmp_path / "nix-calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nix_store = bin_dir / "nix-store"
    nix_store.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f'if [ "$1" = --realise ]; then mkdir -p {out}/bin && ln -sf {sys.executable} '
        f"{out}/bin/python; fi\necho {out}\n"
    )
    nix_store.chmod(0o755)
    drvs = "pytorch=/nix/store/a-worker-pytorch.drv:pytorch-cpu=/nix/store/b-cpu.drv"
    env = clean_env(tmp_path, LEM_NIX_WORKER_DRVS=drvs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        got = resolve_python("pytorch", env, gpu=False)
        assert (got.source, got.nix_drv) == ("nix", "/nix/store/b-cpu.drv")
        assert got.python == f"{out}/bin/python" and not out.exists()  # not built by resolving
        listed = lem({**env, "PATH": os.environ["PATH"]}, "env", "list")
        assert "not built yet: the first worker builds it" in listed.stdout
        assert realise(got) == got.python and Path(got.python).exists()
        assert resolve_python("pytorch", env, gpu=True).nix_drv == "/nix/store/a-worker-pytorch.drv"
        assert realise(resolve_python("pytorch", env, gpu=False)) == got.python  # built: reused
    assert calls.read_text().count("--realise") == 1


def test_nix_variable_is_parsed_leniently() -> None:
    assert parse_nix_pythons("pytorch=/a/bin/python:vllm=/b/bin/python:junk:=x") == {
        "pytorch": "/a/bin/python",
        "vllm": "/b/bin/python",
    }
    assert parse_nix_pythons("") == {}


def test_env_list_on_this_machine(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    done = lem(clean_env(tmp_path), "env", "list")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout
    assert "pytorch: usable\n  from: current (sys.executable)\n" in blocks
    assert "  engine: torch " in blocks
    cpu_lock = (REPO / "envs" / "pytorch-cpu" / "requirements.txt").read_bytes()
    sha = hashlib.sha256(cpu_lock).hexdigest()[:16]
    # this test venv is the CPU lock plus lem's development tools: nearest, and differs
    assert (
        f"  lock: pytorch-cpu sha256:{sha}: differs (nearest of pytorch, pytorch-cpu): " in blocks
    )
    assert re.search(r"differs \(nearest of pytorch, pytorch-cpu\): \d+ extra\n    extra: ", blocks)
    assert "vllm: cannot run\n" in blocks
    assert "  why: vllm is not installed in " in blocks
    assert "tensorrt (experimental): cannot run\n" in blocks
    assert "  lock: none (no lock (tensorrt: `uv lock` failed here: " in blocks
    assert "  why: tensorrt_llm is not installed in " in blocks
    assert "TensorRT-LLM has wheels only for some Linux/CUDA/Python combinations" in blocks


def test_env_list_reports_explicit_and_broken_interpreters(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        LEM_VLLM_PYTHON=str(fake_python(tmp_path / "py")),
        LEM_TENSORRT_PYTHON="/bin/false",
    )
    done = lem(env, "env", "list")
    assert done.returncode == 0, done.stderr
    assert "explicit (LEM_VLLM_PYTHON)" in done.stdout
    assert "/bin/false is not a working Python" in done.stdout


def test_sync_dry_run_prints_the_plan_and_makes_nothing(tmp_path: Path) -> None:
    done = lem(clean_env(tmp_path), "env", "sync", "pytorch", "--dry-run")
    assert done.returncode == 0, done.stderr
    lock = REPO / "envs" / "pytorch-cpu" / "requirements.txt"  # no driver here: the CPU lock
    assert f"  lock: pytorch-cpu {lock} sha256:" in done.stdout
    assert "would run:" in done.stdout and "--require-hashes" in done.stdout
    gpu = lem(clean_env(tmp_path), "env", "sync", "pytorch", "--variant", "gpu", "--dry-run")
    assert f"  lock: pytorch {REPO / 'envs' / 'pytorch' / 'requirements.txt'}" in gpu.stdout
    assert not (tmp_path / "cache").exists()
    bad = lem(clean_env(tmp_path), "env", "sync", "nosuch")
    assert bad.returncode == 2 and "unknown backend 'nosuch'" in bad.stderr
    trt = lem(clean_env(tmp_path), "env", "sync", "tensorrt")
    assert trt.returncode == 2 and trt.stdout == ""
    [line] = trt.stderr.splitlines()
    assert line.startswith("lem: error: tensorrt: lem ships no lock for it: `uv lock` failed")
    no_cpu = lem(clean_env(tmp_path), "env", "sync", "vllm", "--variant", "cpu", "--dry-run")
    assert no_cpu.returncode == 2 and "has no cpu lock" in no_cpu.stderr


def tiny_wheel(folder: Path) -> Path:
    """A real, installable wheel of a one-module package ``lemtiny`` 0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lemtiny-0.1-py3-none-any.whl"
    files = {
        "lemtiny/__init__.py": "VALUE = 1\n",
        "lemtiny-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: lemtiny\nVersion: 0.1\n",
        "lemtiny-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "lemtiny-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, "lemtiny-0.1.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_sync_installs_exactly_the_lock_and_env_list_says_it_matches(
    tmp_path: Path, installer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real venv from a (tiny, hash-pinned) CPU lock, offline; then a changed lock."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if installer == "uv" and not Path(uv).exists():
        pytest.skip("uv is not installed here")
    wheels = tmp_path / "wheels"
    digest = hashlib.sha256(tiny_wheel(wheels).read_bytes()).hexdigest()
    text = f"lemtiny==0.1 \\\n    --hash=sha256:{digest}\n"
    locks = fake_locks(tmp_path, pytorch="torch==9\n", pytorch_cpu=text)
    monkeypatch.setenv("LEM_ENV_LOCKS_DIR", str(locks))
    path = f"{Path(uv).parent}:/usr/bin:/bin" if installer == "uv" else "/usr/bin:/bin"
    env = clean_env(
        tmp_path, LEM_ENV_LOCKS_DIR=str(locks), PATH=path,
        PIP_FIND_LINKS=str(wheels), UV_FIND_LINKS=str(wheels), PIP_CONSTRAINT="",
    )  # fmt: skip
    first = lem(env, "env", "sync", "pytorch", "--offline")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].endswith(f", {installer})")
    synced = find_synced_venv("pytorch", env, gpu=False)
    assert synced is not None
    folder, marker = synced
    assert (marker["lock"], marker["source"]) == ("pytorch-cpu", "lem env sync")
    assert marker["lock_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    python = venv_python(folder)
    found = subprocess.run(
        [python, "-c", "import lemtiny, lem.workers; print(lem.workers.__file__)"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=True,
    )  # fmt: skip
    assert "lem-source" in found.stdout  # lem linked in from this coordinator's code
    listed = lem(env, "env", "list")
    pytorch = listed.stdout.split("vllm:")[0]
    assert f"from: venv ({folder})" in pytorch
    assert f"  lock: pytorch-cpu sha256:{marker['lock_sha256'][:16]}: matches (made from it)\n" in (
        pytorch
    )
    again = lem(env, "env", "sync", "pytorch", "--offline")
    assert again.returncode == 0 and "up to date: reused" in again.stdout
    # the environment's packages changed by hand: it no longer matches, and says how
    subprocess.run(
        [python, "-m", "pip", "uninstall", "-y", "-q", "lemtiny"] if installer == "pip"
        else [uv, "pip", "uninstall", "--python", str(python), "lemtiny"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    listed = lem(env, "env", "list")
    assert "differs (made from it): 1 missing\n    missing: lemtiny==0.1\n" in listed.stdout


def test_a_worker_runs_from_an_explicitly_configured_interpreter(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    python = fake_python(tmp_path / "python", marker=calls)
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        "name: explicit\ndevice: cpu\nmodel: {source: builtin, name: lem-tiny}\n"
        "batch_size: 1\nnum_prompts: 1\noutput_tokens: 10\nwarmup_batches: 0\n"
        "min_window_s: 0.2\n"
    )
    env = clean_env(tmp_path, LEM_PYTORCH_PYTHON=str(python), LEM_WORKER_BACKEND=SLEEP_BACKEND)
    db = tmp_path / "lem.db"
    done = lem(env, "run", str(experiment), "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert "-m lem.workers" in calls.read_text()  # the worker came from that interpreter
    with Store(db) as store:
        [campaign] = store.list_campaigns()
        [exp] = store.campaign_detail(campaign.id).experiments
        [record] = store.experiment_measurements(exp.id)
    assert record.measurement is not None
    # the result names the lock its engine environment is nearest (no marker: this venv)
    lock = record.measurement.environment.engine_lock
    cpu_lock = (REPO / "envs" / "pytorch-cpu" / "requirements.txt").read_bytes()
    assert lock is not None and (lock.name, lock.made_from) == ("pytorch-cpu", False)
    assert lock.sha256 == hashlib.sha256(cpu_lock).hexdigest()
    assert lock.matches is False and lock.difference_count >= len(lock.differences) > 0
