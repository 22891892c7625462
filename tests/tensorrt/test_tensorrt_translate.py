"""The TensorRT-LLM translation layer without TensorRT-LLM: ``LLM`` and ``SamplingParams``
keyword arguments, one-line rejections, and the objects built from a stand-in namespace.

TensorRT-LLM has no wheel here: these check lem's side of the contract only (what the
worker asks TensorRT-LLM for), never that TensorRT-LLM accepts it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from lem.coordinator.planning.config_loader import ConfigError, experiment_from_mapping
from lem.protocol.config import ExperimentConfig, config_hash, config_problems, load_key
from lem.workers.engines.base import BackendError
from lem.workers.engines.tensorrt.translate import (
    TrtEnum,
    TrtObject,
    build_arguments,
    load_arguments,
    materialise,
    random_checkpoint_dir,
    sampling_params,
)
from lem.workers.engines.vllm.translate import BYTE_EOS_ID, BYTE_PAD_ID


def trt_config(**fields: Any) -> ExperimentConfig:
    """A TensorRT-LLM experiment (one GPU unless told) from plain fields."""
    data: dict[str, Any] = {"backend": "tensorrt", "model": {"source": "builtin"}, **fields}
    return msgspec.convert(data, ExperimentConfig)


def test_defaults_build_an_unquantised_engine_sized_by_the_experiment(tmp_path: Path) -> None:
    model = {"source": "random", "name": "qwen2.5-0.5b", "dtype": "float16"}
    config = trt_config(batch_size=6, input_tokens=100, output_tokens=28, model=model)
    args = build_arguments(config, tmp_path / "ckpt")
    assert args["model"] == str(tmp_path / "ckpt")
    assert (args["dtype"], args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (
        "float16", 1, 1,
    )  # fmt: skip
    assert (args["tokenizer"], args["skip_tokenizer_init"]) == (None, True)
    assert args["build_config"] == TrtObject(
        "BuildConfig",
        {"max_batch_size": 6, "max_input_len": 100, "max_seq_len": 128, "max_beam_width": 1},
    )
    assert "quant_config" not in args and "calib_config" not in args
    assert args["kv_cache_config"] == TrtObject(
        "KvCacheConfig", {"free_gpu_memory_fraction": 0.9, "enable_block_reuse": False}
    )


def test_tensorrt_section_sets_parallelism_quantisation_and_limits(tmp_path: Path) -> None:
    config = trt_config(
        gpu_count=4, batch_size=2,
        model={"source": "hf", "path": str(tmp_path), "dtype": "bfloat16"},
        tensorrt={"pp_size": 2, "quantization": "int4_awq", "kv_cache_quantization": "fp8",
                  "calibration_dataset": "~/calib", "max_batch_size": 64, "max_num_tokens": 4096,
                  "free_gpu_memory_fraction": 0.5},
    )  # fmt: skip
    args = build_arguments(config, tmp_path)
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (2, 2)
    assert (args["tokenizer"], args["skip_tokenizer_init"]) == (str(tmp_path.resolve()), False)
    assert args["build_config"].kwargs["max_batch_size"] == 64
    assert args["build_config"].kwargs["max_num_tokens"] == 4096
    assert args["quant_config"] == TrtObject(
        "QuantConfig",
        {"quant_algo": TrtEnum("QuantAlgo", "W4A16_AWQ"),
         "kv_cache_quant_algo": TrtEnum("QuantAlgo", "FP8")},
    )  # fmt: skip
    assert args["calib_config"] == TrtObject(
        "CalibConfig", {"calib_dataset": str(Path("~/calib").expanduser())}
    )
    assert args["kv_cache_config"].kwargs["free_gpu_memory_fraction"] == 0.5


@pytest.mark.parametrize(
    ("quantization", "algo"),
    [("fp8", "FP8"), ("int8_weight_only", "W8A16"), ("int4_weight_only", "W4A16"),
     ("w4a8_awq", "W4A8_AWQ")],
)  # fmt: skip
def test_each_quantisation_name_maps_to_its_quant_algo(
    quantization: str, algo: str, tmp_path: Path
) -> None:
    args = build_arguments(trt_config(tensorrt={"quantization": quantization}), tmp_path)
    assert args["quant_config"].kwargs == {
        "quant_algo": TrtEnum("QuantAlgo", algo), "kv_cache_quant_algo": None,
    }  # fmt: skip


def test_kv_cache_quantisation_alone_and_a_cached_engine_load(tmp_path: Path) -> None:
    config = trt_config(gpu_count=2, tensorrt={"kv_cache_quantization": "int8"})
    args = build_arguments(config, tmp_path)
    assert args["quant_config"].kwargs == {
        "quant_algo": None, "kv_cache_quant_algo": TrtEnum("QuantAlgo", "INT8"),
    }  # fmt: skip
    loaded = load_arguments(config, tmp_path / "engine")
    assert loaded["model"] == str(tmp_path / "engine") and loaded["tensor_parallel_size"] == 2
    assert not {"build_config", "quant_config", "dtype"} & set(loaded)  # baked into the engine
    assert (loaded["max_batch_size"], loaded["max_seq_len"]) == (1, 64)  # the engine's limits
    assert "max_num_tokens" not in loaded  # unset: the engine's own


def test_random_checkpoints_are_named_by_shape_dtype_and_seed(tmp_path: Path) -> None:
    auto = trt_config(model={"source": "random", "name": "llama-3.2-1b", "seed": 4})
    assert random_checkpoint_dir(auto, tmp_path) == (
        tmp_path / "checkpoints" / "llama-3.2-1b-bfloat16-seed4"
    )
    tiny = trt_config(model={"source": "builtin", "dtype": "float32"})
    assert random_checkpoint_dir(tiny, tmp_path).name == "lem-tiny-float32-seed0"


def test_sampling_params_greedy_exact_and_sampled() -> None:
    exact = sampling_params(trt_config(model={"source": "builtin", "seed": 5}), 12)
    assert exact == {
        "n": 1, "max_tokens": 12, "min_tokens": 12, "ignore_eos": True, "seed": 5,
        "detokenize": False, "top_k": 1, "end_id": BYTE_EOS_ID, "pad_id": BYTE_PAD_ID,
    }  # fmt: skip
    sampled = sampling_params(trt_config(greedy=False, ignore_eos=False), 9)
    assert (sampled["temperature"], sampled["top_k"], sampled["top_p"]) == (1.0, 0, 1.0)
    assert (sampled["max_tokens"], sampled["ignore_eos"]) == (9, False)
    assert "min_tokens" not in sampled
    assert sampling_params(trt_config(), 9, prefill_only=True)["max_tokens"] == 1
    hf = sampling_params(trt_config(model={"source": "hf", "path": "/m"}), 3)
    assert "end_id" not in hf and "pad_id" not in hf  # the model's tokenizer knows them
    with pytest.raises(BackendError, match=r"^output_tokens: a request's target must be >= 1"):
        sampling_params(trt_config(), 0)


REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "cpu": ({"device": "cpu"}, "device: the tensorrt backend runs on CUDA GPUs only, got 'cpu'"),
    "gguf": (
        {"model": {"source": "gguf", "path": "/m.gguf"}},
        "model.source: 'gguf' is not supported by the tensorrt backend",
    ),
    "tp_over_gpus": (
        {"gpu_count": 2, "tensorrt": {"tp_size": 4}},
        "tensorrt.tp_size: tp_size (4) x pp_size (1) must equal gpu_count (2)",
    ),
    "pp_over_gpus": (
        {"gpu_count": 2, "tensorrt": {"pp_size": 4}},
        "tensorrt.pp_size: tp_size (1) x pp_size (4) must equal gpu_count (2)",
    ),
    "memory_fraction": (
        {"tensorrt": {"free_gpu_memory_fraction": 0}},
        "tensorrt.free_gpu_memory_fraction: must be in (0, 1], got 0",
    ),
    "zero_batch": ({"tensorrt": {"max_batch_size": 0}}, "tensorrt.max_batch_size: must be >= 1"),
    "few_tokens": (
        {"input_tokens": 512, "tensorrt": {"max_num_tokens": 256}},
        "tensorrt.max_num_tokens: must be >= input_tokens (512), got 256",
    ),
    "calibration_unused": (
        {"tensorrt": {"quantization": "int8_weight_only", "calibration_dataset": "/d"}},
        "tensorrt.calibration_dataset: is not used by quantization 'int8_weight_only'",
    ),
    "server": (
        {"workload": {"mode": "server", "arrival": "concurrency", "concurrency": 2}},
        "workload.mode: backend 'tensorrt' does not support mode 'server': not implemented",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_unsupported_settings_are_one_line_config_errors(case: str, tmp_path: Path) -> None:
    fields, expected = REJECTED[case]
    data = {"backend": "tensorrt", "model": {"source": "builtin"}, **fields}
    with pytest.raises(ConfigError) as caught:
        experiment_from_mapping(data, Path("exp.yaml"))
    assert str(caught.value).startswith(f"exp.yaml: {expected}")
    assert "\n" not in str(caught.value)
    config = msgspec.convert(data, ExperimentConfig)  # the worker refuses it too
    with pytest.raises(BackendError) as refused:
        build_arguments(config, tmp_path)
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)


def test_unknown_quantisation_shape_and_field_are_rejected(tmp_path: Path) -> None:
    refused = r"^exp.yaml: tensorrt.quantization: expected one of: 'fp8', .*, got 'int3'$"
    with pytest.raises(ConfigError, match=refused):
        experiment_from_mapping(
            {"backend": "tensorrt", "tensorrt": {"quantization": "int3"}}, Path("exp.yaml")
        )
    with pytest.raises(ConfigError, match=r"^exp.yaml: tensorrt.use_refit: unknown field$"):
        experiment_from_mapping({"backend": "tensorrt", "tensorrt": {"use_refit": True}},
                                Path("exp.yaml"))  # fmt: skip
    with pytest.raises(BackendError, match="unknown model shape 'gpt-9'"):
        build_arguments(trt_config(model={"source": "random", "name": "gpt-9"}), tmp_path)
    vllm = msgspec.convert({"backend": "vllm"}, ExperimentConfig)
    with pytest.raises(BackendError, match=r"^backend: the tensorrt worker runs backend"):
        build_arguments(vllm, tmp_path)


def test_the_tensorrt_section_keys_tensorrt_loads_and_hashes_only() -> None:
    base = trt_config()
    other = trt_config(tensorrt={"quantization": "fp8"})
    assert load_key(base) != load_key(other) and config_hash(base) != config_hash(other)
    moved = trt_config(tensorrt={"engine_cache_dir": "/elsewhere"})
    assert config_hash(moved) == config_hash(base)  # where engines live changes no figure
    pytorch = msgspec.convert({"model": {"source": "builtin"}}, ExperimentConfig)
    pytorch_fp8 = msgspec.structs.replace(pytorch, tensorrt=other.tensorrt)
    assert load_key(pytorch) == load_key(pytorch_fp8)
    assert config_hash(pytorch) == config_hash(pytorch_fp8)  # hashes from before the section
    assert config_problems(pytorch_fp8) == []


class Recorder:
    """A stand-in TensorRT-LLM class: keeps the keyword arguments it was built with."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def test_materialise_builds_nested_objects_and_enums_from_a_namespace(tmp_path: Path) -> None:
    quant_algo = SimpleNamespace(FP8="fp8-member", W4A16="w4a16-member")
    namespace = SimpleNamespace(
        QuantAlgo=quant_algo, QuantConfig=Recorder, BuildConfig=Recorder, KvCacheConfig=Recorder
    )
    section = {"quantization": "int4_weight_only", "kv_cache_quantization": "fp8"}
    config = trt_config(tensorrt=section)
    built = materialise(build_arguments(config, tmp_path), namespace)
    assert built["quant_config"].kwargs == {
        "quant_algo": "w4a16-member", "kv_cache_quant_algo": "fp8-member",
    }  # fmt: skip
    assert built["build_config"].kwargs["max_seq_len"] == 64
    assert built["model"] == str(tmp_path)
    with pytest.raises(BackendError, match=r"^TensorRT-LLM has no CalibConfig in SimpleNamespace"):
        materialise({"x": TrtObject("CalibConfig", {})}, SimpleNamespace())
