"""Timed passes over the prepared batches inside one measurement window."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from lem.workers.backend import Cancelled, MeasurementWindow
from lem.workers.pytorch import device as devices
from lem.workers.pytorch.generation import generate_batch

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from lem.workers.pytorch.prompts import PreparedBatch


def timed_passes(
    model: PreTrainedModel,
    batches: list[PreparedBatch],
    generation: GenerationConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    min_window_s: float,
    min_iterations: int,
    device: str,
) -> tuple[float, int, list[torch.Tensor]]:
    """Generate every batch, pass after pass, until ``min_window_s`` seconds and
    ``min_iterations`` passes are both reached; the window's edges sit right after a device
    synchronisation. Returns (duration in s, passes, one output per generate call)."""
    outputs: list[torch.Tensor] = []
    devices.synchronize(device)
    window.begin()
    started_s = time.perf_counter()
    passes = 0
    while True:
        for index, batch in enumerate(batches):
            if (index or passes) and cancel.is_set():
                raise Cancelled("cancelled during a measured window")
            outputs.append(generate_batch(model, batch, generation))
        passes += 1
        if passes >= min_iterations and time.perf_counter() - started_s >= min_window_s:
            break
    devices.synchronize(device)
    duration_s = time.perf_counter() - started_s
    window.end()
    return duration_s, passes, outputs
