"""Environment providers: which interpreter runs each backend's worker, ``lem env list``,
``lem env sync`` (a real venv from a tiny requirements file, offline) and a worker
started from an explicitly configured interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lem.coordinator.env_commands import plan_sync
from lem.coordinator.environments import (
    MARKER_NAME,
    env_key,
    find_synced_venv,
    parse_nix_pythons,
    resolve_python,
    venv_python,
)
from lem.coordinator.store import Store

SLEEP_BACKEND = "lem.workers.sleep_backend:SleepBackend"


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


def test_resolution_order_explicit_then_nix_then_venv_then_current(tmp_path: Path) -> None:
    explicit = str(fake_python(tmp_path / "explicit-python"))
    legacy = str(fake_python(tmp_path / "legacy-python"))
    nix = str(fake_python(tmp_path / "nix-python"))
    requirements = tmp_path / "reqs"
    requirements.mkdir()
    (requirements / "vllm.txt").write_text("vllm\n")
    key = env_key((requirements / "vllm.txt").read_bytes(), "3.11")
    venv = tmp_path / "cache" / f"vllm-{key}"
    venv_python(venv).parent.mkdir(parents=True)
    fake_python(venv_python(venv))
    (venv / MARKER_NAME).write_text(json.dumps({"python_version": "3.11"}))
    env = clean_env(
        tmp_path,
        LEM_ENV_REQUIREMENTS_DIR=str(requirements),
        LEM_VLLM_PYTHON=explicit,
        LEM_PYTHON_VLLM=legacy,
        LEM_NIX_WORKER_PYTHONS=f"pytorch=/nix/store/x/bin/python:vllm={nix}",
    )
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
    (requirements / "vllm.txt").write_text("vllm==0.1\n")  # changed file: the venv is stale
    got = resolve_python("vllm", env)
    assert (got.source, got.python) == ("current", sys.executable)


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
    assert "vllm: cannot run\n" in blocks
    assert "  why: vllm is not installed in " in blocks
    assert "tensorrt (experimental): cannot run\n" in blocks
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
    assert "would run:" in done.stdout and "pytorch.txt" in done.stdout
    assert "-m pip install" in done.stdout or "uv pip install" in done.stdout
    assert not (tmp_path / "cache").exists()
    bad = lem(clean_env(tmp_path), "env", "sync", "nosuch")
    assert bad.returncode == 2 and "unknown backend 'nosuch'" in bad.stderr


@pytest.mark.slow
def test_sync_makes_a_venv_from_a_tiny_requirements_file_and_reuses_it(tmp_path: Path) -> None:
    requirements = tmp_path / "reqs"
    requirements.mkdir()
    (requirements / "pytorch.txt").write_text("# nothing: an offline test\n")
    env = clean_env(tmp_path, LEM_ENV_REQUIREMENTS_DIR=str(requirements))
    first = lem(env, "env", "sync", "pytorch", "--offline")
    assert first.returncode == 0, first.stderr
    synced = find_synced_venv("pytorch", env)
    assert synced is not None
    folder, marker = synced
    assert marker["backend"] == "pytorch" and folder.parent == tmp_path / "cache"
    python = venv_python(folder)
    without_path = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('lem.workers').origin)"],
        capture_output=True, text=True, env=without_path, check=True,
    )  # fmt: skip
    assert "lem-source" in found.stdout  # lem linked into the venv from this source tree
    assert resolve_python("pytorch", env).python == str(python)
    again = lem(env, "env", "sync", "pytorch", "--offline")
    assert again.returncode == 0 and "up to date: reused" in again.stdout
    plan = plan_sync("pytorch", requirements / "pytorch.txt", offline=True)
    assert plan.link_lem and not any("-r" in c for c in plan.commands)  # nothing to install


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
