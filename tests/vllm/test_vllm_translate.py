"""The vLLM translation layer without vLLM: keyword arguments and one-line rejections.

These run in lem's own environment (no vLLM installed); ``test_vllm_contract`` builds the
same arguments into real vLLM objects in vLLM's environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.coordinator.planning.config_loader import ConfigError, experiment_from_mapping
from lem.protocol.config import ExperimentConfig, config_hash, config_problems, load_key
from lem.workers.engines.base import BackendError
from lem.workers.engines.vllm.translate import BYTE_EOS_ID, engine_args, sampling_params


def vllm_config(**fields: Any) -> ExperimentConfig:
    """A vLLM experiment (on one GPU unless told) from plain fields, validated."""
    data: dict[str, Any] = {"backend": "vllm", "model": {"source": "builtin"}, **fields}
    return msgspec.convert(data, ExperimentConfig)


def test_engine_args_of_a_random_shape_point_at_its_written_config(tmp_path: Path) -> None:
    config = vllm_config(
        model={"source": "random", "name": "qwen2.5-0.5b", "dtype": "bfloat16", "seed": 7},
        batch_size=4, input_tokens=100, output_tokens=20,
    )  # fmt: skip
    args = engine_args(config, tmp_path)
    assert args["load_format"] == "dummy" and args["skip_tokenizer_init"] is True
    assert (args["dtype"], args["seed"], args["max_num_seqs"], args["max_model_len"]) == (
        "bfloat16", 7, 4, 120,
    )  # fmt: skip
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (1, 1)
    written = json.loads((Path(args["model"]) / "config.json").read_text())
    assert written["architectures"] == ["Qwen2ForCausalLM"]
    assert (written["hidden_size"], written["num_hidden_layers"]) == (896, 24)
    assert written["eos_token_id"] == BYTE_EOS_ID


def test_vllm_section_sets_the_engine(tmp_path: Path) -> None:
    config = vllm_config(
        gpu_count=4,
        vllm={"pipeline_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_num_seqs": 64,
              "max_model_len": 4096, "enforce_eager": True, "quantization": "fp8", "seed": 3},
    )  # fmt: skip
    args = engine_args(config, tmp_path)
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (2, 2)
    assert (args["gpu_memory_utilization"], args["max_num_seqs"]) == (0.5, 64)
    assert (args["max_model_len"], args["enforce_eager"], args["seed"]) == (4096, True, 3)
    assert args["quantization"] == "fp8"


def test_hf_model_loads_its_weights_and_tokenizer(tmp_path: Path) -> None:
    config = vllm_config(model={"source": "hf", "path": str(tmp_path)})
    args = engine_args(config, tmp_path / "scratch")
    assert (args["model"], args["load_format"], args["skip_tokenizer_init"]) == (
        str(tmp_path), "auto", False,
    )  # fmt: skip


def test_sampling_params_greedy_exact_and_sampled() -> None:
    exact = sampling_params(vllm_config(model={"source": "builtin", "seed": 5}), 12)
    assert exact == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 12, "min_tokens": 12,
        "ignore_eos": True, "seed": 5, "detokenize": False,
    }  # fmt: skip
    sampled = sampling_params(vllm_config(greedy=False, ignore_eos=False), 9)
    assert (sampled["temperature"], sampled["max_tokens"], sampled["ignore_eos"]) == (1.0, 9, False)
    assert "min_tokens" not in sampled and sampled["stop_token_ids"] == [BYTE_EOS_ID]
    assert sampling_params(vllm_config(), 9, prefill_only=True)["max_tokens"] == 1


REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "pp_on_cpu": (
        {"device": "cpu", "vllm": {"pipeline_parallel_size": 2}},
        "vllm.pipeline_parallel_size: must be 1 with device 'cpu', got 2",
    ),
    "tp_over_gpus": (
        {"gpu_count": 2, "vllm": {"tensor_parallel_size": 4}},
        "vllm.tensor_parallel_size: tensor_parallel_size (4) x pipeline_parallel_size (1) "
        "must equal gpu_count (2)",
    ),
    "memory_fraction": (
        {"vllm": {"gpu_memory_utilization": 1.5}},
        "vllm.gpu_memory_utilization: must be in (0, 1], got 1.5",
    ),
    "short_model_len": (
        {"input_tokens": 100, "output_tokens": 28, "vllm": {"max_model_len": 64}},
        "vllm.max_model_len: must be >= input_tokens + output_tokens (128), got 64",
    ),
    "gguf": (
        {"model": {"source": "gguf", "path": "/m.gguf"}},
        "model.source: 'gguf' is not supported by the vllm backend yet",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_unsupported_settings_are_one_line_config_errors(case: str, tmp_path: Path) -> None:
    fields, expected = REJECTED[case]
    data = {"backend": "vllm", "model": {"source": "builtin"}, **fields}
    with pytest.raises(ConfigError) as caught:
        experiment_from_mapping(data, Path("exp.yaml"))
    assert str(caught.value).startswith(f"exp.yaml: {expected}")
    assert "\n" not in str(caught.value)
    config = msgspec.convert(data, ExperimentConfig)  # the worker refuses it too
    with pytest.raises(BackendError) as refused:
        engine_args(config, tmp_path)
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)


def test_unknown_shape_and_unknown_vllm_field_are_rejected(tmp_path: Path) -> None:
    config = vllm_config(model={"source": "random", "name": "gpt-9"})
    with pytest.raises(BackendError, match="unknown model shape 'gpt-9'"):
        engine_args(config, tmp_path)
    with pytest.raises(ConfigError, match=r"^exp.yaml: vllm.swap_space: unknown field$"):
        experiment_from_mapping({"backend": "vllm", "vllm": {"swap_space": 4}}, Path("exp.yaml"))


def test_the_vllm_section_keys_vllm_loads_only() -> None:
    base = vllm_config()
    other = vllm_config(vllm={"enforce_eager": True})
    assert load_key(base) != load_key(other)
    pytorch = msgspec.convert({"model": {"source": "builtin"}}, ExperimentConfig)
    pytorch_eager = msgspec.structs.replace(pytorch, vllm=other.vllm)
    assert load_key(pytorch) == load_key(pytorch_eager)
    assert config_hash(pytorch) == config_hash(pytorch_eager)  # pre-vllm hashes kept
    assert config_problems(pytorch_eager) == []
