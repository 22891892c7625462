"""Server mode of the PyTorch backend: transformers' continuous batching
(``model.init_continuous_batching``, a ``ContinuousBatchingManager``) as a server session
(``ServerSession``), fed by the server scenario's arrival process
(``lem.workers.workload.scenarios.server``).

Where the times come from: transformers stamps ``time.perf_counter()`` itself, on its
generation thread, for each request: ``created_time`` when ``add_request`` builds it (on
the feeding thread: the send), ``lifespan[0]`` when the scheduler first takes it (the end
of its queueing), and, with ``record_timestamps=True``, one timestamp per generated token
as the generation thread appends it (checked in transformers 5.17 and 5.24). lem only reads
them after the request finished: no consumer thread races the engine.

The engine: at most ``batch_size`` requests per step (``max_requests_per_batch``), a paged
KV cache for ``batch_size`` requests at their longest, prefix sharing off (a repeated
prompt does its whole prefill, as offline), the model's attention kept (no automatic
switch to flash attention). This module imports torch and transformers at its top: import
it lazily.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers import ContinuousBatchingConfig, GenerationConfig
from transformers.generation.continuous_batching.utils import WorkloadHints

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError, TimedRequest
from lem.workers.engines.pytorch import device as devices
from lem.workers.engines.pytorch.loader import LoadedModel
from lem.workers.workload.prompt_set import PromptSet

PAGE_SIZE_TOKENS = 256


def engine_config(config: ExperimentConfig, prompt_set: PromptSet) -> ContinuousBatchingConfig:
    """The continuous batching settings of ``config`` (see the module docstring)."""
    longest = max(len(ids) for ids in prompt_set.prompt_ids)
    longest += max(prompt_set.output_tokens_per_prompt)
    blocks_per_request = math.ceil(longest / PAGE_SIZE_TOKENS) + 1
    settings: dict[str, Any] = {
        "page_size": PAGE_SIZE_TOKENS,
        "num_blocks": config.batch_size * blocks_per_request,
        "max_batch_tokens": config.batch_size * max(len(ids) for ids in prompt_set.prompt_ids),
        "max_requests_per_batch": config.batch_size,
        "allow_block_sharing": False,
        "auto_switch_to_flash": False,
        "seed": config.model.seed,
    }
    # transformers 5.17 names the KV page ``block_size`` and has no ``auto_switch_to_flash``
    # (it never switches attention by itself): pass what this version knows
    names = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    if "page_size" not in names:
        settings["block_size"] = settings.pop("page_size")
    return ContinuousBatchingConfig(**{k: v for k, v in settings.items() if k in names})


class CbEngine:
    """A started ContinuousBatchingManager as a server session (``ServerSession``)."""

    def __init__(
        self, manager: Any, prompt_set: PromptSet, eos_token_ids: list[int], device: str
    ) -> None:
        self.manager = manager
        self.prompt_set = prompt_set
        self.eos_token_ids = eos_token_ids
        self.device = device
        self.scheduled_s: dict[int, float | None] = {}
        self.results: dict[str, Any] = {}

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None:
        prompt = index % len(self.prompt_set.prompt_ids)
        request_id = self.manager.add_request(
            self.prompt_set.prompt_ids[prompt], request_id=f"{prefix}{index}",
            max_new_tokens=self.prompt_set.output_tokens_per_prompt[prompt],
            record_timestamps=True, eos_token_id=self.eos_token_ids,
        )  # fmt: skip
        if request_id is None:
            raise BackendError("transformers' continuous batching refused a request")
        if not prefix:
            self.scheduled_s[index] = scheduled_s

    def wait_finished(self, timeout_s: float) -> int:
        finished = 0
        result = self.manager.get_result(timeout=timeout_s)
        while result is not None:
            if result.error is not None:
                raise BackendError(f"request {result.request_id} failed: {result.error}")
            if result.is_finished():
                self.results[result.request_id] = result
                finished += 1
            result = self.manager.get_result(timeout=0)
        if not finished and not self.manager.is_running():
            raise BackendError("transformers' continuous batching thread stopped")
        return finished

    def clear(self) -> None:
        """Forget the finished (warmup) requests."""
        self.results.clear()

    def engine_steps(self) -> int:
        """The engine's step counter (``current_batch``)."""
        steps: int = self.manager.current_batch
        return steps

    def synchronize(self) -> None:
        devices.synchronize(self.device)

    def timed(self, sent: int) -> list[TimedRequest]:
        """One TimedRequest per sent request, in send order, from transformers' stamps."""
        requests = []
        prompts = len(self.prompt_set.prompt_ids)
        for index in range(sent):
            result = self.results[str(index)]
            tokens = len(result.generated_tokens)
            stamps = result.timestamps or []
            if tokens < 1 or len(stamps) < tokens or result.lifespan[0] < result.created_time:
                raise BackendError(f"request {index}: {tokens} token(s), {len(stamps)} stamp(s)")
            requests.append(
                TimedRequest(
                    pass_index=index // prompts,
                    batch_index=None,
                    input_tokens=len(self.prompt_set.prompt_ids[index % prompts]),
                    start_s=result.created_time,
                    token_times_s=stamps[:tokens],
                    queued_s=result.lifespan[0] - result.created_time,
                    scheduled_s=self.scheduled_s[index],
                )
            )
        return requests


def _generation_config(config: ExperimentConfig, loaded: LoadedModel, most: int) -> Any:
    return GenerationConfig(
        max_new_tokens=most, do_sample=not config.greedy, pad_token_id=loaded.pad_token_id,
        eos_token_id=-1 if config.ignore_eos or not loaded.eos_token_ids
        else list(loaded.eos_token_ids),
    )  # fmt: skip


@contextmanager
def open_session(
    config: ExperimentConfig, loaded: LoadedModel, prompt_set: PromptSet
) -> Iterator[CbEngine]:
    """A started engine for ``prompt_set`` (transformers' own warmup done); on leaving,
    stopped (hard when the ``with`` body raised) and destroyed. The caller holds
    ``torch.no_grad()`` (not ``inference_mode``: see the caller)."""
    eos = [] if config.ignore_eos else list(loaded.eos_token_ids)
    most_tokens = max(prompt_set.output_tokens_per_prompt)
    model: Any = loaded.model
    manager = model.init_continuous_batching(
        generation_config=_generation_config(config, loaded, most_tokens),
        continuous_batching_config=engine_config(config, prompt_set),
        workload_hints=WorkloadHints(num_requests=config.batch_size),
    )
    failed = True
    try:
        manager.warmup()
        manager.start()
        yield CbEngine(manager, prompt_set, eos, loaded.device)
        failed = False
    finally:
        manager.stop(block=True, timeout=60.0, hard_stop=failed)
        manager.destroy()
