"""Helpers of the PyTorch backend tests (CPU, lem-tiny unless a test says otherwise)."""

from __future__ import annotations

import threading
from typing import Any

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import GenerationStats
from lem.workers.engines.pytorch.engine import PyTorchBackend


class RecordingWindow:
    """A MeasurementWindow that appends "begin"/"end" to a shared event list."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def begin(self) -> None:
        self.events.append("begin")

    def end(self) -> None:
        self.events.append("end")


def tiny_config(**overrides: Any) -> ExperimentConfig:
    """A quick lem-tiny experiment on CPU; ``overrides`` replace its fields."""
    fields: dict[str, Any] = {
        "device": "cpu",
        "batch_size": 2,
        "num_prompts": 5,
        "input_tokens": 12,
        "output_tokens": 6,
        "warmup_batches": 1,
    }
    fields.update(overrides)
    return ExperimentConfig(**fields)


def no_phase(phase: str, detail: str = "") -> None:
    """A PhaseCallback that ignores every phase."""


def run_config(
    backend: PyTorchBackend,
    config: ExperimentConfig,
    events: list[str] | None = None,
    cancel: threading.Event | None = None,
    min_window_s: float = 0.0,
) -> GenerationStats:
    """Run ``config`` with a recording window (into ``events``)."""
    window = RecordingWindow(events if events is not None else [])
    return backend.run(config, window, cancel or threading.Event(), no_phase, min_window_s)
