"""One offline batch of the PyTorch backend: one ``model.generate`` call on a prepared
batch, timed (with token timing) by a token clock, and its rows' token counts and stamps,
read after the measured window has closed."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError, BatchPlace, BatchResult, TimedRequest
from lem.workers.engines.pytorch import device as devices
from lem.workers.engines.pytorch.generation import generate_batch, new_tokens_per_row

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from lem.workers.engines.pytorch.loader import LoadedModel
    from lem.workers.engines.pytorch.prompts import PreparedBatch
    from lem.workers.engines.pytorch.token_clock import ClockName, TokenClock
    from lem.workers.workload.prompt_set import PromptSet


def timed_generate(
    model: PreTrainedModel,
    batch: PreparedBatch,
    generation: GenerationConfig,
    clock: ClockName = "loop",
) -> tuple[torch.Tensor, float, TokenClock]:
    """Generate ``batch`` with a token clock (``token_clock``): returns the sequences, when
    the call began (perf_counter s) and the clock. ``loop`` stamps the decoding loop's tests
    and adds no device work; ``streamer`` is the costlier streamer clock, for comparison."""
    from lem.workers.engines.pytorch.token_clock import LoopClock, StepClock

    if clock == "loop":
        with LoopClock.attached(model) as loop_clock:
            started_s = time.perf_counter()
            return generate_batch(model, batch, generation), started_s, loop_clock
    streamer = StepClock()
    started_s = time.perf_counter()
    return generate_batch(model, batch, generation, streamer), started_s, streamer


@dataclass(frozen=True)
class Call:
    """One generate call's inputs: a prepared batch and its GenerationConfig (the full one,
    or the prefill-only one with one new token)."""

    batch: PreparedBatch
    generation: GenerationConfig


@dataclass(frozen=True)
class GenerateRun:
    """A generate call that ran: its sequences and, with token timing, when it began
    (perf_counter s) and its clock."""

    call: Call
    output: torch.Tensor
    eos_token_ids: list[int]
    ignore_eos: bool
    started_s: float | None = None
    clock: TokenClock | None = None

    def result(self, place: BatchPlace) -> BatchResult:
        """The batch's counts (each row to its target or first EOS) and, when timed, one
        TimedRequest per row: its tokens are the first steps of the call (the rows of a
        batch share each step's time); it started with the call and queued from its pass's
        start. Raises BackendError when the clock disagrees with the output."""
        batch = self.call.batch
        counts = new_tokens_per_row(
            self.output, batch.input_width_tokens, self.eos_token_ids, self.ignore_eos,
            batch.output_tokens_per_row,
        )  # fmt: skip
        requests: list[TimedRequest] = []
        if self.clock is not None and self.started_s is not None:
            generated = int(self.output.shape[1]) - batch.input_width_tokens
            try:
                steps_s = self.clock.step_times_s(generated)
            except ValueError as error:
                raise BackendError(str(error)) from error
            input_tokens = batch.attention_mask.sum(dim=1).tolist()
            for row, count in enumerate(counts):
                requests.append(
                    TimedRequest(
                        pass_index=place.pass_index,
                        batch_index=place.batch_index,
                        input_tokens=int(input_tokens[row]),
                        start_s=self.started_s,
                        token_times_s=steps_s[:count],
                        queued_s=self.started_s - place.pass_started_s,
                    )
                )
        return BatchResult(batch.rows, batch.real_input_tokens, sum(counts), None, requests)


@dataclass(frozen=True)
class PyTorchOffline:
    """The offline work of one experiment on a loaded model (``OfflineWork``): the
    prepared batches, warmed up on in turn. With token timing, each call goes through
    ``timed_generate``; without, the calls are exactly the untimed ones."""

    loaded: LoadedModel
    prompt_set: PromptSet
    pass_batches: list[Call]
    prefill_batches: list[Call]
    ignore_eos: bool
    clock: ClockName

    def warmup_batch(self, index: int) -> Call:
        return self.pass_batches[index % len(self.pass_batches)]

    def run_batch(self, batch: Call, stamps: bool, cancel: threading.Event) -> GenerateRun:
        model, eos = self.loaded.model, self.loaded.eos_token_ids
        if not stamps:
            output = generate_batch(model, batch.batch, batch.generation)
            return GenerateRun(batch, output, eos, self.ignore_eos)
        output, started_s, clock = timed_generate(model, batch.batch, batch.generation, self.clock)
        return GenerateRun(batch, output, eos, self.ignore_eos, started_s, clock)

    def synchronize(self) -> None:
        devices.synchronize(self.loaded.device)


def offline_work(
    config: ExperimentConfig,
    loaded: LoadedModel,
    prompt_set: PromptSet,
    batches: list[PreparedBatch],
    generation: GenerationConfig,
    clock: ClockName,
) -> PyTorchOffline:
    """The work of ``batches``: generated with ``generation``, and prefill-only with a copy
    that generates one new token."""
    prefill = copy.deepcopy(generation)
    prefill.max_new_tokens = 1
    return PyTorchOffline(
        loaded, prompt_set, [Call(batch, generation) for batch in batches],
        [Call(batch, prefill) for batch in batches], config.ignore_eos, clock,
    )  # fmt: skip
