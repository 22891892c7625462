"""Contract checks of lem's vLLM translation against the real vLLM package (no GPU).

Run by ``test_vllm_contract`` with the Python of vLLM's environment, lem on its path:
``python vllm_contract.py`` prints one JSON object: vLLM's version and, for each check,
what vLLM built from lem's arguments (or the error it raised). The assertions live in
the pytest test, which runs in lem's own environment.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.vllm.translate import (
    to_async_engine_args,
    to_engine_args,
    to_sampling_params,
)

CASES: dict[str, dict[str, Any]] = {
    "builtin": {"model": {"source": "builtin"}},
    "llama-3.2-1b": {
        "model": {"source": "random", "name": "llama-3.2-1b", "dtype": "bfloat16", "seed": 3},
        "batch_size": 8, "input_tokens": 512, "output_tokens": 128,
    },
    "qwen2.5-0.5b": {"model": {"source": "random", "name": "qwen2.5-0.5b", "dtype": "float16"}},
    "tinyllama-1.1b": {"model": {"source": "random", "name": "tinyllama-1.1b"}},
    "llama-3.1-8b-tp2": {
        "model": {"source": "random", "name": "llama-3.1-8b", "dtype": "bfloat16"},
        "gpu_count": 2,
        "vllm": {"gpu_memory_utilization": 0.8, "max_num_seqs": 32, "max_model_len": 2048,
                 "enforce_eager": True, "seed": 11},
    },
    "sampled": {"model": {"source": "builtin"}, "greedy": False, "ignore_eos": False},
}  # fmt: skip


ENGINE_FIELDS = ("load_format", "skip_tokenizer_init", "dtype", "seed", "tensor_parallel_size",
                 "pipeline_parallel_size", "gpu_memory_utilization", "max_num_seqs",
                 "max_model_len", "enforce_eager", "quantization", "generation_config",
                 "stream_interval", "enable_prefix_caching")  # fmt: skip
SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "max_tokens", "min_tokens",
                   "ignore_eos", "seed", "detokenize", "stop_token_ids")  # fmt: skip


def check(fields: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Build EngineArgs, vLLM's model config from them, and SamplingParams for ``fields``."""
    config = msgspec.convert({"backend": "vllm", **fields}, ExperimentConfig)
    args = to_engine_args(config, scratch)
    model = args.create_model_config()  # vLLM reads lem's config.json: needs no GPU
    sampling = to_sampling_params(config, 16)
    prefill = to_sampling_params(config, 16, prefill_only=True)
    return {
        "engine_args": {name: getattr(args, name) for name in ENGINE_FIELDS},
        "architectures": list(model.architectures),
        "model_dtype": str(model.dtype),
        "max_model_len": model.max_model_len,
        "vocab_size": model.get_vocab_size(),
        "num_layers": model.hf_config.num_hidden_layers,
        "sampling": {name: getattr(sampling, name) for name in SAMPLING_FIELDS},
        "prefill_max_tokens": prefill.max_tokens,
    }


def engine_api() -> dict[str, bool]:
    """Whether the vLLM API that ``lem.workers.engines.vllm.engine`` and ``steps`` call exists."""
    import dataclasses

    from vllm import LLM
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.llm_engine import LLMEngine
    from vllm.v1.metrics.stats import RequestStateStats

    stats = {f.name for f in dataclasses.fields(RequestStateStats)}
    prompt = TokensPrompt(prompt_token_ids=[1, 2, 3])
    found = {
        f"LLMEngine.{name}": callable(getattr(LLMEngine, name, None))
        for name in ("add_request", "step", "has_unfinished_requests", "abort_request")
    }
    found["LLM.generate"] = callable(getattr(LLM, "generate", None))
    found.update(async_engine_api())
    found["TokensPrompt.prompt_token_ids"] = prompt["prompt_token_ids"] == [1, 2, 3]
    found["RequestStateStats.queued_ts+scheduled_ts"] = {"queued_ts", "scheduled_ts"} <= stats
    return found


def async_engine_api() -> dict[str, bool]:
    """Whether the AsyncLLM API that ``lem.workers.engines.vllm.serving`` calls exists as used."""
    import inspect

    from vllm.v1.engine.async_llm import AsyncLLM

    generate = inspect.signature(AsyncLLM.generate).parameters
    return {
        "AsyncLLM.from_engine_args": callable(getattr(AsyncLLM, "from_engine_args", None)),
        "AsyncLLM.generate is an async generator": inspect.isasyncgenfunction(AsyncLLM.generate),
        "AsyncLLM.generate(prompt, sampling_params, request_id)": {
            "prompt", "sampling_params", "request_id"} <= set(generate),
        "AsyncLLM.shutdown": callable(getattr(AsyncLLM, "shutdown", None)),
    }  # fmt: skip


def server_check(scratch: Path) -> dict[str, Any]:
    """Build AsyncEngineArgs and streaming SamplingParams of a server-mode experiment."""
    fields = {
        "backend": "vllm",
        "model": {"source": "builtin"},
        "workload": {"mode": "server", "arrival": "concurrency", "concurrency": 4},
    }
    config = msgspec.convert(fields, ExperimentConfig)
    args = to_async_engine_args(config, scratch)
    sampling = to_sampling_params(config, 16, stream_deltas=True)
    return {
        "engine_class": type(args).__name__,
        "disable_log_stats": args.disable_log_stats,
        "stream_interval": args.stream_interval,
        "load_format": args.load_format,
        "output_kind": sampling.output_kind.name,
        "max_tokens": sampling.max_tokens,
    }  # fmt: skip


def main() -> int:
    import vllm

    report: dict[str, Any] = {"vllm_version": vllm.__version__, "cases": {}}
    report["engine_api"] = engine_api()
    from lem.workers.engines.vllm.engine import VllmBackend

    device = VllmBackend().initialise([])  # imports vLLM and torch as a worker does
    report["initialise"] = {"device": device.device, "backend_version": device.backend_version}
    with tempfile.TemporaryDirectory() as scratch:
        for name, fields in CASES.items():
            try:
                report["cases"][name] = check(fields, Path(scratch) / name)
            except Exception as error:  # reported, then failed by the pytest test
                report["cases"][name] = {"error": f"{type(error).__name__}: {error}"}
        try:
            report["server"] = server_check(Path(scratch) / "server")
        except Exception as error:  # reported, then failed by the pytest test
            report["server"] = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.write("LEM-CONTRACT " + json.dumps(report, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
