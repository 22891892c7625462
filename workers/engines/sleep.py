"""A backend that "generates" by sleeping: for exercising lem's GPU-side plumbing on
machines without a GPU, together with a replayed NVML (``LEM_NVML_REPLAY``).

It is never chosen by a config. A worker uses it only when the environment variable
``LEM_WORKER_BACKEND=lem.workers.engines.sleep:SleepBackend`` replaces the configured
backend — a test seam, like ``LEM_NVML_REPLAY``. It claims the GPUs it is given without
touching CUDA, and each "batch" sleeps ``SECONDS_PER_TOKEN`` per output token.

``LEM_SLEEP_HANG=TEXT`` (tests of timeouts): a batch of an experiment whose name contains
TEXT never finishes by itself; it waits until the experiment is cancelled.

``LEM_SLEEP_LOAD_S=UUID=SECONDS[,UUID=SECONDS…]`` (tests of the data-parallel start
barrier): a worker given that GPU takes that long to "load" its model, once.
"""

from __future__ import annotations

import threading
import time

from lem.protocol.config import ExperimentConfig
from lem.protocol.variables import SLEEP_HANG, SLEEP_LOAD_S
from lem.workers.engines.base import (
    Cancelled,
    DeviceReport,
    GenerationStats,
    MeasurementWindow,
    PhaseCallback,
)

SECONDS_PER_TOKEN = 0.001


class SleepBackend:
    name = "sleep"

    def __init__(self) -> None:
        self._gpu_uuids: list[str] = []
        self._loads = 0

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        self._gpu_uuids = list(expected_gpu_uuids)
        device = "cuda" if expected_gpu_uuids else "cpu"
        return DeviceReport(device, self._gpu_uuids, None, None, {})

    def _batch(self, config: ExperimentConfig, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        hang = SLEEP_HANG.get()
        if hang and hang in (config.name or ""):
            cancel.wait()
            raise Cancelled("cancelled while hanging (LEM_SLEEP_HANG)")
        time.sleep(config.output_tokens * SECONDS_PER_TOKEN)

    def _window(
        self, config: ExperimentConfig, window: MeasurementWindow, cancel: threading.Event,
        min_window_s: float, batches: int,
    ) -> tuple[float, int]:  # fmt: skip
        window.begin()
        started_s = time.perf_counter()
        passes = 0
        while passes < config.min_iterations or time.perf_counter() - started_s < min_window_s:
            for _ in range(batches):
                self._batch(config, cancel)
            passes += 1
        duration_s = time.perf_counter() - started_s
        window.end()
        return duration_s, passes

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        on_phase("loading", "sleep backend")
        if not self._loads:
            time.sleep(self._load_s())
        self._loads = self._loads or 1
        batches = -(-config.num_prompts // config.batch_size)
        on_phase("warmup", f"{config.warmup_batches} batch(es)")
        for _ in range(config.warmup_batches):
            self._batch(config, cancel)
        on_phase("measuring", f"{batches} batch(es) a pass")
        duration_s, passes = self._window(config, window, cancel, min_window_s, batches)
        prefill_s, prefill_passes = None, 0
        if prefill_window is not None:
            prefill_s, prefill_passes = self._window(config, prefill_window, cancel, 0.0, 1)
        device = "cuda" if self._gpu_uuids and config.device != "cpu" else "cpu"
        return GenerationStats(
            duration_s=duration_s, repetitions=passes, batches=batches * passes,
            num_prompts=config.num_prompts * passes,
            input_tokens=config.num_prompts * config.input_tokens * passes,
            output_tokens=config.num_prompts * config.output_tokens * passes,
            warmup_batches=config.warmup_batches, peak_gpu_memory_load_mib=None,
            peak_gpu_memory_inference_mib=None,
            gpu_memory_unavailable_reason="sleep backend: no memory is used",
            model_load_s=0.0, model_reused=True, model_load_count=self._loads, device=device,
            prefill_duration_s=prefill_s, prefill_repetitions=prefill_passes,
        )  # fmt: skip

    def _load_s(self) -> float:
        """Seconds a first load takes on our GPUs (``LEM_SLEEP_LOAD_S``; default 0)."""
        pairs = (p.partition("=") for p in (SLEEP_LOAD_S.get() or "").split(","))
        delays_s = {uuid: float(s) for uuid, _, s in pairs if uuid and s}
        return max((delays_s.get(u, 0.0) for u in self._gpu_uuids), default=0.0)

    def close(self) -> None:
        pass
