"""``pytorch.compile``: what each setting does to the measured generate call, which
combinations are config errors, and that its default leaves stored config hashes alone."""

from __future__ import annotations

import hashlib

import msgspec

from lem.protocol.config import ExperimentConfig, ModelConfig, config_hash, config_problems
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.workload import WorkloadConfig
from lem.workers.engines.pytorch.generation import build_generation_config


def config(
    compile_option: bool | None, cache: str = "static", mode: str = "offline"
) -> ExperimentConfig:
    return ExperimentConfig(
        pytorch=msgspec.convert(
            {"cache_implementation": cache, "compile": compile_option}, PyTorchConfig
        ),
        workload=msgspec.convert({"mode": mode, "arrival": "concurrency", "concurrency": 2}
                                 if mode == "server" else {"mode": mode}, WorkloadConfig),
    )  # fmt: skip


def test_each_setting_reaches_the_generation_config() -> None:
    default = build_generation_config(config(None), pad_token_id=0, eos_token_ids=[1])
    assert default.disable_compile in (None, False) and default.compile_config is None
    off = build_generation_config(config(False), pad_token_id=0, eos_token_ids=[1])
    assert off.disable_compile is True
    on = build_generation_config(config(True), pad_token_id=0, eos_token_ids=[1])
    assert on.compile_config is not None and on.compile_config.mode == "reduce-overhead"
    assert on.cache_implementation == "static"


def test_compile_needs_the_static_cache_and_offline_mode() -> None:
    assert config_problems(config(True)) == []
    assert config_problems(config(False, cache="dynamic")) == []
    [(field, problem)] = config_problems(config(True, cache="dynamic"))
    assert field == "pytorch.compile" and "needs pytorch.cache_implementation: static" in problem
    problems = config_problems(config(True, cache="dynamic", mode="server"))
    assert ("pytorch.compile", "true cannot be used in mode 'server'") in problems


def test_the_default_leaves_the_hash_as_before_the_field() -> None:
    default = config(None)
    as_builtins = msgspec.to_builtins(default)
    del as_builtins["vllm"], as_builtins["tensorrt"], as_builtins["openai"]  # a hash before:
    del as_builtins["pytorch"]["compile"]  # none of these
    del as_builtins["pytorch"]["multi_gpu"], as_builtins["prompts"]["skip"]
    del as_builtins["workload"]["sweep"], as_builtins["gpu"]
    before = hashlib.sha256(msgspec.json.encode(as_builtins, order="sorted")).hexdigest()[:16]
    assert config_hash(default) == before
    assert before not in (config_hash(config(False)), config_hash(config(True)))


def test_hashes_of_configs_stored_before_later_fields_are_unchanged() -> None:
    # computed by the code of 2026-11-27 before pytorch.multi_gpu and prompts.skip existed
    assert config_hash(ExperimentConfig()) == "97dc97e4c22df31b"
    llama = ExperimentConfig(batch_size=8, model=ModelConfig(source="random", name="llama-3.2-1b"))
    assert config_hash(llama) == "6ce65f3cee03e6b0"
