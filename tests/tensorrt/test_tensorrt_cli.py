"""The TensorRT-LLM backend through lem's real CLI: ``lem config validate`` of
``backend: tensorrt`` campaigns (bad settings exit 2 with one line naming the file, the
field and the problem), ``lem env list``'s experimental label, and ``lem run`` without
TensorRT-LLM installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def lem(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def campaign(tmp_path: Path, tensorrt: str, gpu_count: int = 1) -> Path:
    path = tmp_path / "trt.yaml"
    path.write_text(
        "name: trt\nexperiment:\n  backend: tensorrt\n"
        f"  gpu_count: {gpu_count}\n  model: {{source: random, name: llama-3.2-1b}}\n"
        f"  tensorrt: {tensorrt}\n"
    )
    return path


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_valid_tensorrt_campaign_validates(tmp_path: Path) -> None:
    path = campaign(tmp_path, "{tp_size: 2, quantization: fp8, kv_cache_quantization: fp8}", 2)
    done = lem("config", "validate", str(path))
    assert done.returncode == 0, done.stderr
    assert "validated all 1 experiment(s) in full" in done.stdout


@pytest.mark.parametrize(
    ("tensorrt", "expected"),
    [
        ("{quantization: int3}", "experiment.tensorrt.quantization: expected one of: 'fp8', "
                                 "'int4_awq', 'int4_weight_only', 'int8_weight_only', 'none', "
                                 "'w4a8_awq', got 'int3'"),
        ("{tp_size: 2}", "experiment.tensorrt.tp_size: tp_size (2) x pp_size (1) must equal "
                         "gpu_count (1)"),
        ("{quantization: int4_weight_only, calibration_dataset: /d}",
         "experiment.tensorrt.calibration_dataset: is not used by quantization "
         "'int4_weight_only'"),
        ("{max_batch_size: 0}", "experiment.tensorrt.max_batch_size: must be >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_tensorrt_settings_exit_2_naming_file_field_and_problem(
    tmp_path: Path, tensorrt: str, expected: str
) -> None:
    path = campaign(tmp_path, tensorrt)
    line = one_line_error(lem("config", "validate", str(path)))
    assert line.startswith(f"lem: error: {path}: {expected}"), line


def test_env_list_labels_tensorrt_experimental_and_says_why_it_cannot_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEM_")}
    env["LEM_ENV_CACHE_DIR"] = str(tmp_path / "cache")
    done = lem("env", "list", env=env)
    assert done.returncode == 0, done.stderr
    block = done.stdout.split("tensorrt (experimental): ", 1)[1]
    lines = block.splitlines()
    assert lines[1] == (
        "  experimental: its worker has never run on a GPU (written against the TensorRT-LLM "
        "1.0 LLM API; only its config translation and engine cache are tested)"
    )
    if lines[0] == "cannot run":  # no TensorRT-LLM in this Python: the reason is given
        why = next(line for line in lines if line.startswith("  why: "))
        assert "tensorrt_llm is not installed in " in why
        assert "wheels only for some Linux/CUDA/Python combinations" in why
    for other in ("pytorch", "vllm"):  # the label is TensorRT-LLM's alone
        assert f"{other} (experimental)" not in done.stdout and f"\n{other}: " in f"\n{done.stdout}"


def test_lem_run_without_tensorrt_llm_fails_with_that_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    found = subprocess.run([sys.executable, "-c", "import tensorrt_llm"], capture_output=True)
    if found.returncode == 0:
        pytest.skip("tensorrt_llm is importable here")
    experiment = tmp_path / "e.yaml"
    experiment.write_text(
        "name: t\nbackend: tensorrt\nmodel: {source: builtin}\n"
        "num_prompts: 2\ninput_tokens: 4\noutput_tokens: 4\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(experiment),
         "--store", str(tmp_path / "lem.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "BackendError: the tensorrt backend needs the tensorrt_llm package" in done.stderr
