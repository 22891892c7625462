"""The TensorRT-LLM engine cache: which settings key an engine, and when a cached engine
is used, built, refused or replaced (builds are stand-ins that write a config.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.tensorrt.engine_cache import (
    CACHE_LAYOUT_VERSION,
    MANIFEST_NAME,
    cache_root,
    engine_inputs,
    engine_key,
    ensure_engine,
    folder_fingerprint,
)

GPUS = ["NVIDIA H100 80GB HBM3 (sm_90)"]


def trt_config(**fields: Any) -> ExperimentConfig:
    data: dict[str, Any] = {"backend": "tensorrt", "model": {"source": "builtin"}, **fields}
    return msgspec.convert(data, ExperimentConfig)


def key_of(config: ExperimentConfig, version: str = "1.0.0", gpus: list[str] = GPUS) -> str:
    return engine_key(engine_inputs(config, version, gpus))


BASE: dict[str, Any] = {"batch_size": 4, "input_tokens": 64, "output_tokens": 32}
# fields that change the built engine: each must change the key
ENGINE_CHANGES: dict[str, dict[str, Any]] = {
    "dtype": {"model": {"source": "builtin", "dtype": "float16"}},
    "seed": {"model": {"source": "builtin", "seed": 1}},
    "shape": {"model": {"source": "random", "name": "qwen2.5-0.5b"}},
    "tp_size": {"gpu_count": 2},
    "pp_size": {"gpu_count": 2, "tensorrt": {"pp_size": 2}},
    "quantization": {"tensorrt": {"quantization": "fp8"}},
    "kv_cache_quantization": {"tensorrt": {"kv_cache_quantization": "fp8"}},
    "batch_size": {"batch_size": 8},
    "max_batch_size": {"tensorrt": {"max_batch_size": 4}},  # the default is batch_size ...
    "max_num_tokens": {"tensorrt": {"max_num_tokens": 2048}},
    "input_tokens": {"input_tokens": 65},
    "output_tokens": {"output_tokens": 33},
}
# fields that do not: the key must stay
RUNTIME_CHANGES: dict[str, dict[str, Any]] = {
    "num_prompts": {"num_prompts": 100},
    "greedy": {"greedy": False, "ignore_eos": False},
    "window": {"min_window_s": 5.0, "min_iterations": 3, "warmup_batches": 4},
    "prompts": {"prompts": {"source": "synthetic", "seed": 9}},
    "memory_fraction": {"tensorrt": {"free_gpu_memory_fraction": 0.5}},
    "cache_dir": {"tensorrt": {"engine_cache_dir": "/elsewhere", "build_engine": "never"}},
    "name": {"name": "another"},
}


@pytest.mark.parametrize("case", sorted(ENGINE_CHANGES))
def test_engine_settings_change_the_key(case: str) -> None:
    base = trt_config(**BASE)
    changed = trt_config(**{**BASE, **ENGINE_CHANGES[case]})
    if case == "max_batch_size":  # ... so naming it equal to batch_size keeps the key
        assert key_of(base) == key_of(changed)
        changed = trt_config(**{**BASE, "tensorrt": {"max_batch_size": 5}})
    assert key_of(base) != key_of(changed)


@pytest.mark.parametrize("case", sorted(RUNTIME_CHANGES))
def test_runtime_settings_keep_the_key(case: str) -> None:
    assert key_of(trt_config(**BASE)) == key_of(trt_config(**{**BASE, **RUNTIME_CHANGES[case]}))


def test_key_is_stable_and_follows_version_and_gpu_model() -> None:
    config = trt_config(**BASE)
    assert key_of(config) == key_of(trt_config(**BASE))  # a fresh, equal config
    assert len(key_of(config)) == 16 and int(key_of(config), 16) >= 0
    assert key_of(config) != key_of(config, version="1.1.0")
    assert key_of(config) != key_of(config, gpus=["NVIDIA A100-SXM4-80GB (sm_80)"])
    # insertion order of the inputs does not matter, values do
    inputs = engine_inputs(config, "1.0.0", GPUS)
    assert engine_key(dict(reversed(list(inputs.items())))) == engine_key(inputs)


def test_hf_models_are_keyed_by_path_and_file_fingerprint(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    config = trt_config(model={"source": "hf", "path": str(model)})
    first = key_of(config)
    assert key_of(config) == first
    print_before = folder_fingerprint(model)
    (model / "model.safetensors").write_bytes(b"other weights")  # a replaced weight file
    assert folder_fingerprint(model) != print_before and key_of(config) != first
    elsewhere = tmp_path / "copy"
    model.rename(elsewhere)
    assert key_of(trt_config(model={"source": "hf", "path": str(elsewhere)})) != key_of(config)


def test_cache_root_prefers_the_config_then_the_variable_then_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "LEM_TRTLLM_ENGINE_CACHE": str(tmp_path / "var"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}  # fmt: skip
    named = trt_config(tensorrt={"engine_cache_dir": str(tmp_path / "mine")})
    assert cache_root(named, env) == tmp_path / "mine"
    assert cache_root(trt_config(), env) == tmp_path / "var"
    del env["LEM_TRTLLM_ENGINE_CACHE"]  # XDG_CACHE_HOME never reaches a worker: not read
    assert cache_root(trt_config(), env) == tmp_path / ".cache" / "lem" / "trtllm-engines"


class FakeBuild:
    """A stand-in for ``LLM(...)`` + ``LLM.save``: counts builds and writes an engine."""

    def __init__(self, fail: bool = False, complete: bool = True) -> None:
        self.calls: list[Path] = []
        self.fail, self.complete = fail, complete

    def __call__(self, staging: Path) -> str:
        self.calls.append(staging)
        if self.fail:
            raise RuntimeError("out of memory while building")
        staging.mkdir(parents=True)
        (staging / "rank0.engine").write_bytes(b"engine")
        if self.complete:
            (staging / "config.json").write_text(json.dumps({"built": len(self.calls)}))
        return f"live engine {len(self.calls)}"


def test_a_miss_builds_and_a_second_lookup_hits(tmp_path: Path) -> None:
    inputs = engine_inputs(trt_config(**BASE), "1.0.0", GPUS)
    build = FakeBuild()
    ticks = iter([10.0, 12.5])
    entry, live = ensure_engine(tmp_path, inputs, "if_missing", build, clock=lambda: next(ticks))
    assert (entry.hit, live, entry.build_s) == (False, "live engine 1", 2.5)
    assert entry.folder == tmp_path / engine_key(inputs)
    assert (entry.engine_dir / "rank0.engine").read_bytes() == b"engine"
    assert sorted(p.name for p in entry.folder.iterdir()) == ["engine", MANIFEST_NAME]
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["layout"] == CACHE_LAYOUT_VERSION and manifest["key"] == entry.key
    assert manifest["inputs"] == json.loads(json.dumps(inputs)) and manifest["build_s"] == 2.5
    again, nothing = ensure_engine(tmp_path, inputs, "if_missing", build)
    assert (again.hit, nothing, again.build_s, len(build.calls)) == (True, None, 0.0, 1)
    assert again.engine_dir == entry.engine_dir


def test_never_refuses_a_miss_and_always_rebuilds_a_hit(tmp_path: Path) -> None:
    inputs = engine_inputs(trt_config(**BASE), "1.0.0", GPUS)
    build = FakeBuild()
    with pytest.raises(BackendError, match=r"^tensorrt.build_engine: 'never', and no engine"):
        ensure_engine(tmp_path, inputs, "never", build)
    assert build.calls == []
    ensure_engine(tmp_path, inputs, "if_missing", build)
    entry, _ = ensure_engine(tmp_path, inputs, "never", build)
    assert entry.hit and len(build.calls) == 1
    rebuilt, live = ensure_engine(tmp_path, inputs, "always", build)
    assert (rebuilt.hit, live, len(build.calls)) == (False, "live engine 2", 2)
    assert json.loads((rebuilt.engine_dir / "config.json").read_text()) == {"built": 2}


def test_a_failed_or_incomplete_build_is_never_a_hit(tmp_path: Path) -> None:
    inputs = engine_inputs(trt_config(**BASE), "1.0.0", GPUS)
    with pytest.raises(RuntimeError, match="out of memory"):
        ensure_engine(tmp_path, inputs, "if_missing", FakeBuild(fail=True))
    with pytest.raises(BackendError, match=r"left no config\.json"):
        ensure_engine(tmp_path, inputs, "if_missing", FakeBuild(complete=False))
    build = FakeBuild()
    entry, _ = ensure_engine(tmp_path, inputs, "if_missing", build)
    assert not entry.hit and len(build.calls) == 1  # the earlier attempts left no hit


def test_a_manifest_of_other_inputs_or_a_lost_engine_is_a_miss(tmp_path: Path) -> None:
    inputs = engine_inputs(trt_config(**BASE), "1.0.0", GPUS)
    build = FakeBuild()
    entry, _ = ensure_engine(tmp_path, inputs, "if_missing", build)
    manifest = json.loads(entry.manifest_path.read_text())
    manifest["inputs"]["tensorrt_llm"] = "0.21.0"  # a stale engine under the same key
    entry.manifest_path.write_text(json.dumps(manifest))
    assert not ensure_engine(tmp_path, inputs, "if_missing", build)[0].hit
    os.remove(entry.engine_dir / "config.json")
    assert not ensure_engine(tmp_path, inputs, "if_missing", build)[0].hit
    assert len(build.calls) == 3
