"""An engine that "generates" by sleeping: for exercising lem's GPU-side plumbing on
machines without a GPU, together with a replayed NVML (``LEM_NVML_REPLAY``).

It is never chosen by a config. A worker uses it only when the environment variable
``LEM_WORKER_BACKEND=lem.workers.engines.sleep:SleepBackend`` replaces the configured
backend — a test seam, like ``LEM_NVML_REPLAY``. It claims the GPUs it is given without
touching CUDA, and each "batch" sleeps ``SECONDS_PER_TOKEN`` per output token (one token
in the prefill-only window). Offline it has no prompts (no prompt set hash); in server
mode each request is a thread sleeping per token (``SleepSession``), so the server
scenario's arrivals and latencies run for real.

``LEM_SLEEP_HANG=TEXT`` (tests of timeouts): a batch of an experiment whose name contains
TEXT never finishes by itself; it waits until the experiment is cancelled.

``LEM_SLEEP_SLOTS=N`` (load-sweep tests): server mode generates at most N requests at once;
the others wait for a slot (their queue time is recorded), so the "server" saturates.

``LEM_SLEEP_LOAD_S=UUID=SECONDS[,UUID=SECONDS…]`` (tests of the data-parallel start
barrier and of the load's energy): a worker given that GPU takes that long to "load" its
model, once (its first load; every later one is a reuse).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace

from lem.protocol.config import ExperimentConfig
from lem.protocol.variables import SLEEP_HANG, SLEEP_LOAD_S, SLEEP_SLOTS
from lem.workers.engines.base import (
    BatchPlace,
    BatchResult,
    Cancelled,
    DeviceReport,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
    ServerSession,
    TimedRequest,
)
from lem.workers.workload.prompt_set import PromptSet, ids_hash
from lem.workers.workload.scenarios import ScenarioBackend

SECONDS_PER_TOKEN = 0.001
MEMORY_REASON = "sleep backend: no memory is used"


@dataclass(frozen=True)
class SleepBatch:
    """A batch of ``rows`` prompts of ``input_tokens`` tokens, ``tokens`` tokens each."""

    rows: int
    input_tokens: int
    tokens: int

    def result(self, place: BatchPlace) -> BatchResult:
        return BatchResult(
            self.rows, self.rows * self.input_tokens, self.rows * self.tokens, None, []
        )


class SleepSession:
    """Server mode: each request is a thread that sleeps ``SECONDS_PER_TOKEN`` per output
    token and stamps each token, so the server scenario's arrivals, waits and latencies run
    for real (the engine's timing is the sleep's)."""

    def __init__(self, config: ExperimentConfig) -> None:
        n = config.num_prompts
        self.config = config
        self._prompts = PromptSet(
            prompt_ids=[[0] * config.input_tokens for _ in range(n)],
            output_tokens_per_prompt=[config.output_tokens] * n,
            prompt_set_hash=ids_hash([[index] for index in range(n)]),
            source_description=f"sleep backend: {n} prompt(s) of {config.input_tokens} token(s)",
        )
        self._lock = threading.Condition()
        slots = SLEEP_SLOTS.get()
        self._slots = threading.Semaphore(int(slots)) if slots else None
        self._requests: list[tuple[str, TimedRequest, threading.Thread, list[float]]] = []
        self._unreported = 0  # finished since the last wait_finished

    @property
    def prompt_set(self) -> PromptSet:
        return self._prompts

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None:
        tokens = self._prompts.output_tokens_per_prompt[index % len(self._prompts.prompt_ids)]
        stamps: list[float] = []
        waited_s = [0.0]  # set once a slot is free (LEM_SLEEP_SLOTS)
        start_s = time.perf_counter()
        request = TimedRequest(
            pass_index=index // len(self._prompts.prompt_ids),
            batch_index=None,
            input_tokens=self.config.input_tokens,
            start_s=start_s,
            token_times_s=stamps,
            queued_s=0.0,
            scheduled_s=scheduled_s,
        )

        def generate() -> None:
            if self._slots is not None:
                self._slots.acquire()
                waited_s[0] = time.perf_counter() - start_s
            try:
                for _ in range(tokens):
                    time.sleep(SECONDS_PER_TOKEN)
                    stamps.append(time.perf_counter())
            finally:
                if self._slots is not None:
                    self._slots.release()
            with self._lock:
                self._unreported += 1
                self._lock.notify_all()

        thread = threading.Thread(target=generate, daemon=True)
        with self._lock:
            self._requests.append((prefix, request, thread, waited_s))
        thread.start()

    def wait_finished(self, timeout_s: float) -> int:
        """How many requests finished since the last call, waiting up to ``timeout_s`` for
        one when none has."""
        with self._lock:
            self._lock.wait_for(lambda: self._unreported > 0, timeout_s)
            finished, self._unreported = self._unreported, 0
            return finished

    def clear(self) -> None:
        with self._lock:
            self._requests = [r for r in self._requests if r[2].is_alive()]

    def engine_steps(self) -> int | None:
        return None

    def synchronize(self) -> None:
        pass

    def timed(self, sent: int) -> list[TimedRequest]:
        with self._lock:
            measured = [
                replace(request, queued_s=waited[0])
                for prefix, request, _, waited in self._requests
                if prefix == ""
            ]
        return measured[:sent]


@dataclass(frozen=True)
class SleepWork:
    """The offline work: ``ceil(num_prompts / batch_size)`` batches a pass."""

    config: ExperimentConfig
    pass_batches: list[SleepBatch]
    prefill_batches: list[SleepBatch]
    prompt_set: PromptSet | None = None

    def warmup_batch(self, index: int) -> SleepBatch:
        return self.pass_batches[index % len(self.pass_batches)]

    def run_batch(self, batch: SleepBatch, stamps: bool, cancel: threading.Event) -> SleepBatch:
        if cancel.is_set():
            raise Cancelled("cancelled")
        hang = SLEEP_HANG.get()
        if hang and hang in (self.config.name or ""):
            cancel.wait()
            raise Cancelled("cancelled while hanging (LEM_SLEEP_HANG)")
        time.sleep(batch.tokens * SECONDS_PER_TOKEN)
        return batch

    def synchronize(self) -> None:
        pass


class SleepBackend(ScenarioBackend):
    name = "sleep"

    def __init__(self) -> None:
        self._gpu_uuids: list[str] = []
        self._loads = 0

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        self._gpu_uuids = list(expected_gpu_uuids)
        device = "cuda" if expected_gpu_uuids else "cpu"
        return DeviceReport(device, self._gpu_uuids, None, None, {})

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        """The first load "takes" ``LEM_SLEEP_LOAD_S`` (its ``model_load_s``: the asked
        delay, not a timed one); every later one reuses it."""
        device = "cuda" if self._gpu_uuids and config.device != "cpu" else "cpu"
        if self._loads:
            return LoadInfo(0.0, True, self._loads, device)
        delay_s = self._load_s()
        time.sleep(delay_s)
        self._loads = 1
        return LoadInfo(delay_s, False, self._loads, device)

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[SleepWork]:
        size, prompts = config.batch_size, config.num_prompts
        rows = [min(size, prompts - first) for first in range(0, prompts, size)]
        full = [SleepBatch(n, config.input_tokens, config.output_tokens) for n in rows]
        yield SleepWork(config, full, [SleepBatch(n, config.input_tokens, 1) for n in rows])

    def serve(self, config: ExperimentConfig) -> AbstractContextManager[ServerSession]:
        return nullcontext(SleepSession(config))

    def memory(self) -> GpuMemory:
        return GpuMemory(None, None, MEMORY_REASON)

    def _load_s(self) -> float:
        """Seconds a first load takes on our GPUs (``LEM_SLEEP_LOAD_S``; default 0)."""
        pairs = (p.partition("=") for p in (SLEEP_LOAD_S.get() or "").split(","))
        delays_s = {uuid: float(s) for uuid, _, s in pairs if uuid and s}
        return max((delays_s.get(u, 0.0) for u in self._gpu_uuids), default=0.0)

    def close(self) -> None:
        pass
