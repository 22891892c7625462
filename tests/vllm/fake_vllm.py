"""A stand-in ``vllm`` package, written to a folder and put first on ``sys.path``, so that
lem's vLLM backend runs end to end on CPU: ``AsyncLLM`` streams one new token per engine
step (every ``STEP_S`` seconds, per request) as ``RequestOutputKind.DELTA`` outputs with
vLLM-shaped request metrics. It checks the arguments lem passes the way vLLM's classes
would reject unknown ones. Not vLLM: only the surface lem uses (the contract tests check
that surface against the real package)."""

from __future__ import annotations

import sys
from pathlib import Path

STEP_S = 0.002

FILES = {
    "vllm/__init__.py": """
__version__ = "0.33.0+stand-in"
from dataclasses import dataclass, field

ENGINE_FIELDS = {"model", "load_format", "skip_tokenizer_init", "dtype", "seed",
                 "tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization",
                 "max_num_seqs", "max_model_len", "enforce_eager", "quantization",
                 "generation_config", "stream_interval", "enable_prefix_caching",
                 "disable_log_stats",
                 "enable_log_requests"}


class EngineArgs:
    def __init__(self, **kwargs):
        unknown = set(kwargs) - ENGINE_FIELDS
        if unknown:
            raise TypeError(f"unexpected engine arguments: {sorted(unknown)}")
        self.__dict__.update(kwargs)


class AsyncEngineArgs(EngineArgs):
    pass


class _ModelConfig:
    def get_vocab_size(self):
        return 256


class LLMEngine:
    # Steps every unfinished request by one token a step, at most max_num_seqs at once
    # (cumulative outputs, as vLLM's LLMEngine gives them).

    def __init__(self, max_num_seqs):
        self.model_config = _ModelConfig()
        self.max_num_seqs = max_num_seqs
        self.active = {}  # request id -> [prompt, params, tokens so far]
        self.steps = 0

    def add_request(self, request_id, prompt, params):
        assert request_id not in self.active, f"request id in flight: {request_id}"
        self.active[request_id] = [prompt, params, 0]

    def has_unfinished_requests(self):
        return bool(self.active)

    def abort_request(self, ids):
        for request_id in ids:
            self.active.pop(request_id, None)

    def step(self):
        from types import SimpleNamespace

        self.steps += 1
        outputs = []
        for request_id in list(self.active)[: self.max_num_seqs]:
            state = self.active[request_id]
            state[2] += 1
            done = state[2] >= state[1].max_tokens
            metrics = SimpleNamespace(queued_ts=0.0, scheduled_ts=0.001)
            outputs.append(SimpleNamespace(
                request_id=request_id, finished=done, metrics=metrics,
                outputs=[SimpleNamespace(token_ids=[7] * state[2])]))
            if done:
                del self.active[request_id]
        return outputs


class LLM:
    made = []  # every LLM made (tests read it)

    def __init__(self, **kwargs):
        self.args = EngineArgs(**{k: v for k, v in kwargs.items()})
        self.llm_engine = LLMEngine(kwargs["max_num_seqs"])
        LLM.made.append(self)


SAMPLING_FIELDS = {"max_tokens", "min_tokens", "temperature", "top_p", "top_k", "seed",
                   "ignore_eos", "stop_token_ids", "output_kind", "detokenize", "n"}


class SamplingParams:
    def __init__(self, **kwargs):
        unknown = set(kwargs) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"unexpected sampling arguments: {sorted(unknown)}")
        self.max_tokens = kwargs.get("max_tokens", 16)
        self.output_kind = kwargs.get("output_kind")
        self.__dict__.update(kwargs)
""",
    "vllm/sampling_params.py": """
import enum


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2
""",
    "vllm/inputs.py": """
def TokensPrompt(prompt_token_ids):
    return {"prompt_token_ids": list(prompt_token_ids)}
""",
    "vllm/v1/__init__.py": "",
    "vllm/v1/engine/__init__.py": "",
    "vllm/v1/engine/async_llm.py": f"""
import asyncio
import time
from types import SimpleNamespace

from vllm.sampling_params import RequestOutputKind

STEP_S = {STEP_S}


class ModelConfig:
    def get_vocab_size(self):
        return 256


class AsyncLLM:
    started = []  # every engine made (tests read it)

    def __init__(self, args):
        self.args = args
        self.model_config = ModelConfig()
        self.shut_down = False
        self.requests = []
        AsyncLLM.started.append(self)

    @classmethod
    def from_engine_args(cls, args):
        asyncio.get_running_loop()  # vLLM's output handler needs the loop: built on it
        return cls(args)

    async def generate(self, prompt, sampling_params, request_id):
        assert sampling_params.output_kind is RequestOutputKind.DELTA, "lem streams deltas"
        assert request_id not in self.requests, f"request id reused: {{request_id}}"
        self.requests.append(request_id)
        arrival = time.time()
        first = None
        for i in range(sampling_params.max_tokens):
            await asyncio.sleep(STEP_S)
            now = time.time()
            first = first or now
            done = i == sampling_params.max_tokens - 1
            metrics = SimpleNamespace(arrival_time=arrival, queued_ts=0.0, scheduled_ts=0.001,
                                      first_token_ts=first, last_token_ts=now,
                                      num_generation_tokens=i + 1)
            yield SimpleNamespace(request_id=request_id, finished=done, metrics=metrics,
                                  outputs=[SimpleNamespace(token_ids=[7])])

    def shutdown(self):
        self.shut_down = True
""",
}


def install(folder: Path) -> Path:
    """Write the stand-in package under ``folder`` and put it first on ``sys.path``."""
    for name, text in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    sys.path.insert(0, str(folder))
    return folder
