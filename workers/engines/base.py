"""The interface every worker engine implements, and the types it returns.

The worker runtime owns the protocol, NVML and the journal. The scenario layer
(``lem.workers.workload.scenarios``) owns the measuring method, written once for every
engine: warmup, the measured window's edges (the engine's device synchronisation, then
the window's ``begin``; at the end a synchronisation, then its ``end``), passes until
``min_window_s`` and ``min_iterations``, cancel, the prefill-only window, arrivals in
server mode, and the ``GenerationStats`` it returns. An engine (``Engine``) owns its
library (imported lazily, inside ``initialise``), the loaded model and how one offline
batch or one streaming request runs on it, with per-token stamps taken where its tokens
reach lem; its own tricks (a token clock, a step loop, an event loop) stay inside it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lem.protocol.config import ExperimentConfig
from lem.protocol.errors import LemError

if TYPE_CHECKING:
    from lem.workers.workload.prompt_set import PromptSet


class BackendError(LemError):
    """An experiment failed inside the backend; the worker stays usable."""


class RetryableError(BackendError):
    """An experiment failed for a reason a fresh attempt may not meet again (a server that
    did not start): the coordinator retries the cycle, up to its ``max_attempts``."""


class CudaVisibilityError(BackendError):
    """The GPUs the worker sees differ from those it was given (fatal for the worker)."""


class Cancelled(BackendError):
    """The coordinator cancelled the running experiment."""


class MeasurementWindow(Protocol):
    """Edges of a measured window, opened and closed by the scenario layer only
    (``scenarios/window.py``), each right after a device synchronisation."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


@dataclass(frozen=True)
class DeviceReport:
    """What ``initialise`` found: the device kind and the CUDA/library versions."""

    device: str  # "cuda" or "cpu"
    gpu_uuids: list[str]  # NVML-style "GPU-…" UUIDs as the engine sees them, in order
    cuda_version: str | None
    backend_version: str | None
    packages: dict[str, str]


@dataclass(frozen=True)
class TimedRequest:
    """One request as a backend timed it. Times in s on ``time.perf_counter``'s clock.

    ``start_s``: when the request was sent (offline: its generate call began);
    ``token_times_s``: when each of its output tokens reached the host, in order (one per
    output token); ``queued_s``: how long it waited before its work began (a duration),
    None when unknown; ``scheduled_s``: when the arrival process meant to send it (server
    mode with arrival times), else None.
    """

    pass_index: int
    batch_index: int | None
    input_tokens: int
    start_s: float
    token_times_s: Sequence[float]
    queued_s: float | None
    scheduled_s: float | None = None


@dataclass(frozen=True)
class GenerationStats:
    """What a backend measured over one window. Durations in seconds, memory in MiB.

    Counts (batches, prompts, tokens) are totals over the window's ``repetitions`` passes.
    """

    duration_s: float
    repetitions: int
    batches: int
    num_prompts: int
    input_tokens: int
    output_tokens: int
    warmup_batches: int
    peak_gpu_memory_load_mib: float | None
    peak_gpu_memory_inference_mib: float | None
    gpu_memory_unavailable_reason: str | None
    model_load_s: float
    model_reused: bool
    model_load_count: int
    device: str
    warmup_s: float = 0.0
    warmup_converged: bool | None = None  # None: a fixed warmup, no convergence asked
    warmup_final_cv: float | None = None
    prefill_duration_s: float | None = None  # the prefill-only window, when one was asked
    prefill_repetitions: int = 0
    prompt_set_hash: str | None = (
        None  # identifies the prompts (see lem.workers.workload.prompt_set)
    )
    prompt_source: str | None = None  # where the prompts came from, one line
    timed_requests: list[TimedRequest] = field(default_factory=list)  # in send order
    window_started_s: float = 0.0  # perf_counter at the window's begin (request times' origin)
    latency_unavailable_reason: str | None = None  # why there are no timed requests
    resolved_dtype: str | None = None  # the loaded model's dtype (``LoadInfo.dtype``)
    engine_flags: list[str] = field(default_factory=list)  # the engine's ``run_flags()``


@dataclass(frozen=True)
class LoadInfo:
    """What ``Engine.load`` did: the load's duration (s; 0.0 when the kept model was
    reused), whether it was reused, the loads in this process so far, and the device the
    experiment runs on ("cuda" or "cpu"), and the dtype the model's weights are in (the
    config's ``auto`` resolved; None where the engine does not say)."""

    model_load_s: float
    model_reused: bool
    model_load_count: int
    device: str
    dtype: str | None = None


@dataclass(frozen=True)
class GpuMemory:
    """Peak GPU memory (MiB) of the load and of warmup + window, or why there is none."""

    peak_load_mib: float | None
    peak_inference_mib: float | None
    unavailable_reason: str | None


@dataclass(frozen=True)
class BatchPlace:
    """Where an offline batch ran in its window: its pass, its index in the pass, and when
    the pass began (perf_counter s)."""

    pass_index: int
    batch_index: int
    pass_started_s: float


@dataclass(frozen=True)
class BatchResult:
    """What one offline batch did: prompts, input and output tokens, the engine's own steps
    (None when the engine does not report them) and its requests with per-token stamps
    ([] when the batch was not timed)."""

    prompts: int
    input_tokens: int
    output_tokens: int
    engine_steps: int | None
    requests: list[TimedRequest]


class BatchRun(Protocol):
    """One offline batch that ran. Its outputs are read by ``result`` only after the
    window has closed (reading them may copy from the device)."""

    def result(self, place: BatchPlace) -> BatchResult: ...


BatchT = TypeVar("BatchT")


class OfflineWork(Protocol[BatchT]):
    """One experiment's offline work, prepared on the loaded engine before any window:
    prompts tokenised, inputs on the device, generation settings built.

    ``pass_batches``: the batches of one pass over the prompt set, in order (an engine
    that batches by itself has one: the whole set); ``prefill_batches``: the same pass
    generating one token per prompt; ``prompt_set``: the prompts (None: an engine with
    no real prompts, the sleep engine).
    """

    @property
    def prompt_set(self) -> PromptSet | None: ...

    @property
    def pass_batches(self) -> Sequence[BatchT]: ...

    @property
    def prefill_batches(self) -> Sequence[BatchT]: ...

    def warmup_batch(self, index: int) -> BatchT:
        """Warmup batch ``index`` (0, 1, …): ``batch_size`` prompts of the set, cycled."""
        ...

    def run_batch(self, batch: BatchT, stamps: bool, cancel: threading.Event) -> BatchRun:
        """Run ``batch`` to its end; with ``stamps``, stamp each output token when it
        reaches the host (an engine whose stamps cost nothing may stamp anyway). Raises
        ``Cancelled`` when ``cancel`` is set while the engine runs it."""
        ...

    def synchronize(self) -> None:
        """Return once the engine's device work is done (a window edge follows)."""
        ...


class ServerSession(Protocol):
    """A started continuously batching engine for one server-mode experiment.

    ``submit`` sends one streaming request now (``prefix`` "" for measured requests,
    ``warmup…-`` for warmup ones); ``wait_finished`` blocks up to ``timeout_s`` and says
    how many finished; ``clear`` forgets every request (after warmup); ``timed`` gives
    the measured requests, in send order, with the engine's per-token stamps.
    """

    @property
    def prompt_set(self) -> PromptSet: ...

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None: ...

    def wait_finished(self, timeout_s: float) -> int: ...

    def clear(self) -> None: ...

    def engine_steps(self) -> int | None:
        """The engine's step counter (None when the engine does not report steps)."""
        ...

    def synchronize(self) -> None: ...

    def timed(self, sent: int) -> list[TimedRequest]: ...


class Engine(Protocol):
    """What an engine plug-in implements. One instance lives as long as its worker."""

    name: str

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        """Import the engine, check CUDA sees exactly ``expected_gpu_uuids``; the report
        carries the versions.

        Raises ``CudaVisibilityError`` when CUDA was initialised already or sees other
        GPUs than expected.
        """
        ...

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        """Refuse what this engine cannot run, then load the model of ``config`` or reuse
        the kept one (same load key); a model of another key is released first."""
        ...

    def offline(self, config: ExperimentConfig) -> AbstractContextManager[OfflineWork[Any]]:
        """The offline work of ``config`` on the loaded model, for the ``with`` body."""
        ...

    def serve(self, config: ExperimentConfig) -> AbstractContextManager[ServerSession]:
        """A started server session of ``config`` on the loaded model; leaving the ``with``
        stops it (and aborts requests still in flight when the body raised)."""
        ...

    def memory(self) -> GpuMemory:
        """Peak GPU memory of the load and of the last warmup + window."""
        ...

    def close(self) -> None:
        """Release the model and device memory."""
        ...


class Backend(Protocol):
    """What the worker runtime drives: one measured run of an experiment. Every engine
    gets ``run`` from ``ScenarioBackend`` (``lem.workers.workload.scenarios``), a thin
    adapter to the scenario of the experiment's workload mode."""

    name: str

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport: ...

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
        load_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        """Load (or reuse) the model, warm up, then run the measured window: passes over
        the prompt set until ``min_window_s`` has elapsed and ``config.min_iterations``
        passes have run (server mode: the arrival process's requests). With
        ``prefill_window``, then the same passes generating one token per prompt inside
        it (prefill only). ``load_window`` begins right before the load and ends right
        after it unless the model was reused."""
        ...

    def close(self) -> None:
        """Release the model and device memory."""
        ...


class PhaseCallback(Protocol):
    def __call__(self, phase: str, detail: str = "") -> None: ...
