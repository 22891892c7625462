"""lem's vLLM translation against the real vLLM package, in vLLM's own environment.

vLLM pins its own torch, so it lives in an environment of its own, made from its lock
(``lem env sync vllm``, or ``make vllm-venv``); this test runs ``vllm_contract.py`` there
as a subprocess, with lem's sources on its path, and checks what the real ``EngineArgs``,
model config and ``SamplingParams`` came out as. No GPU is needed: vLLM reads lem's
written ``config.json`` without one. The environment is the one lem resolves for vllm
workers (``LEM_VLLM_PYTHON``, else a synced one); skipped, with the reason, without one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lem.coordinator.execution.environments import resolve_python

REPO = Path(__file__).resolve().parents[2]
RESOLVED = resolve_python("vllm")
VLLM_PYTHON = Path(RESOLVED.python if RESOLVED.source != "current" else "/no-vllm-environment")
MARKER = "LEM-CONTRACT "

pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason="no vLLM environment here (make vllm-venv: lem env sync vllm; or LEM_VLLM_PYTHON)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The contract script's report, run once in vLLM's Python with lem on its path."""
    tree = tmp_path_factory.mktemp("lem-tree")
    (tree / "lem").mkdir()
    # a regular package (with __init__.py), so this tree's lem wins over the environment's own
    (tree / "lem" / "__init__.py").symlink_to(REPO / "api" / "__init__.py")
    for package in ("protocol", "coordinator", "workers"):
        (tree / "lem" / package).symlink_to(REPO / package)
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_contract.py"))],
        capture_output=True, text=True, env=env, cwd=tree, timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    return found


def test_vllm_version_is_the_one_lem_targets(report: dict[str, Any]) -> None:
    assert report["vllm_version"].split(".")[:2] >= ["0", "33"]


def test_the_engine_api_lem_calls_exists(report: dict[str, Any]) -> None:
    assert report["engine_api"] and all(report["engine_api"].values()), report["engine_api"]


def test_the_backend_initialises_in_vllms_environment(report: dict[str, Any]) -> None:
    assert report["initialise"] == {"device": "cpu", "backend_version": report["vllm_version"]}


@pytest.mark.parametrize(
    ("case", "architecture", "layers", "vocab_size", "dtype"),
    [
        ("builtin", "LlamaForCausalLM", 2, 512, "torch.bfloat16"),  # 'auto': vLLM's choice
        ("llama-3.2-1b", "LlamaForCausalLM", 16, 128256, "torch.bfloat16"),
        ("qwen2.5-0.5b", "Qwen2ForCausalLM", 24, 151936, "torch.float16"),
        ("tinyllama-1.1b", "LlamaForCausalLM", 22, 32000, "torch.bfloat16"),
        ("llama-3.1-8b-tp2", "LlamaForCausalLM", 32, 128256, "torch.bfloat16"),
    ],
)
def test_vllm_reads_each_random_shape_as_lem_built_it(
    report: dict[str, Any], case: str, architecture: str, layers: int, vocab_size: int,
    dtype: str,
) -> None:  # fmt: skip
    built = report["cases"][case]
    assert "error" not in built, built
    assert built["architectures"] == [architecture]
    assert (built["num_layers"], built["vocab_size"], built["model_dtype"]) == (
        layers, vocab_size, dtype,
    )  # fmt: skip
    args = built["engine_args"]
    assert (args["load_format"], args["skip_tokenizer_init"]) == ("dummy", True)
    assert (args["generation_config"], args["stream_interval"]) == ("vllm", 1)
    assert args["enable_prefix_caching"] is False  # repeated passes must not skip prefill
    assert built["max_model_len"] == args["max_model_len"]


def test_engine_settings_reach_vllm(report: dict[str, Any]) -> None:
    args = report["cases"]["llama-3.1-8b-tp2"]["engine_args"]
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (2, 1)
    assert (args["gpu_memory_utilization"], args["max_num_seqs"]) == (0.8, 32)
    assert (args["max_model_len"], args["enforce_eager"], args["seed"]) == (2048, True, 11)
    assert report["cases"]["llama-3.2-1b"]["engine_args"]["max_model_len"] == 512 + 128


def test_sampling_params_greedy_exact_and_sampled(report: dict[str, Any]) -> None:
    greedy = report["cases"]["llama-3.2-1b"]["sampling"]
    assert greedy == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16,
        "min_tokens": 16, "ignore_eos": True, "seed": 3, "detokenize": False,
        "stop_token_ids": [],
    }  # fmt: skip
    sampled = report["cases"]["sampled"]["sampling"]
    assert (sampled["temperature"], sampled["ignore_eos"], sampled["min_tokens"]) == (1.0, False, 0)
    assert sampled["stop_token_ids"] == [2]  # lem's byte tokenizer's EOS
    assert report["cases"]["sampled"]["prefill_max_tokens"] == 1


def test_server_mode_arguments_reach_vllms_async_engine(report: dict[str, Any]) -> None:
    assert report["server"] == {
        "engine_class": "AsyncEngineArgs", "disable_log_stats": False, "stream_interval": 1,
        "load_format": "dummy", "output_kind": "DELTA", "max_tokens": 16,
    }  # fmt: skip
