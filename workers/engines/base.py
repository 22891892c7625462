"""The interface every worker backend implements, and the types it returns.

The worker runtime owns the protocol, NVML and the journal; a backend owns its engine
library (imported lazily, inside ``initialise``), the loaded model and the generate loop.
The backend calls ``window.begin()`` and ``window.end()`` right after a device
synchronisation at each edge of the measured window, so that the energy counters and the
clock bracket exactly the measured work.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lem.protocol.config import ExperimentConfig
from lem.protocol.errors import LemError


class BackendError(LemError):
    """An experiment failed inside the backend; the worker stays usable."""


class CudaVisibilityError(BackendError):
    """The GPUs the worker sees differ from those it was given (fatal for the worker)."""


class Cancelled(BackendError):
    """The coordinator cancelled the running experiment."""


class MeasurementWindow(Protocol):
    """Edges of a measured window. Each call happens right after a device sync."""

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


class Backend(Protocol):
    """A backend of one engine. One instance lives as long as its worker process."""

    name: str

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        """Import the engine, check CUDA sees exactly ``expected_gpu_uuids``.

        Raises ``CudaVisibilityError`` when CUDA was initialised already or sees other
        GPUs than expected.
        """
        ...

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        """Load (or reuse) the model, warm up, then run the measured window: passes over
        the prompt set until ``min_window_s`` has elapsed and ``config.min_iterations``
        passes have run. With ``prefill_window``, then the same passes generating one token
        per prompt inside it (prefill only)."""
        ...

    def close(self) -> None:
        """Release the model and device memory."""
        ...


class PhaseCallback(Protocol):
    def __call__(self, phase: str, detail: str = "") -> None: ...
