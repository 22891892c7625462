"""The fields of an experiment every engine reads, before its engine sections.

``ExperimentConfig`` (``lem.protocol.config``) is built in three layers so that the
engine sections keep their place among its fields while only the engine registry names
the engines: ``CommonConfig`` here (``name`` … ``warmup``), then
``lem.protocol.engines.registry.EngineSections`` (the ``backend`` field's values and one
section per engine), then ``ExperimentConfig`` itself (``workload``, ``slo``). Use
``ExperimentConfig``; the layers are not experiments on their own.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from lem.protocol.prompt_config import PromptConfig

ModelSource = Literal["builtin", "random", "hf", "gguf"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
DeviceKind = Literal["auto", "cuda", "cpu"]


class ModelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which model to load and how.

    ``source``:
      - ``builtin``: lem's tiny random-weight model (``name`` must be ``lem-tiny``).
      - ``random``: random weights at a named real architecture shape (``name``, e.g.
        ``llama-3.2-1b``); nothing is downloaded.
      - ``hf``: a local Hugging Face model folder at ``path``.
      - ``gguf``: a local GGUF file at ``path``.
    """

    source: ModelSource = "builtin"
    name: str | None = None
    path: str | None = None
    dtype: DType = "auto"
    seed: int = 0


class IdleBaselineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How each GPU's idle power is measured for net (above-idle) energy. Seconds, unitless CV.

    Power is sampled every ``sample_interval_s``; the baseline is the mean of the last
    ``window_s`` once their coefficient of variation is ≤ ``cv_threshold``, waiting at most
    ``max_wait_s``. A baseline older than ``max_age_s`` is measured again before the next
    experiment. ``enabled: false`` reports gross energy only.
    """

    enabled: bool = True
    window_s: float = 5.0
    sample_interval_s: float = 0.1
    cv_threshold: float = 0.02
    max_wait_s: float = 60.0
    max_age_s: float = 1800.0


class WarmupConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Warm up until converged: with ``until_cv`` set, warmup batches continue until the
    coefficient of variation of the last ``window`` batch durations is ≤ ``until_cv`` and
    their mean differs from the previous ``window`` batches' mean by ≤ ``until_cv`` (no
    drift), at least ``warmup_batches`` and ``2 × window`` batches, at most ``max_batches``
    or ``max_s`` seconds. Unset: exactly ``warmup_batches`` batches."""

    until_cv: float | None = None
    window: int = 5
    max_batches: int = 1000
    max_s: float = 300.0


class CooldownConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What happens before each measurement. Seconds and °C.

    ``gap_s``: a fixed pause. ``max_temperature_c``: then wait until every measured GPU is at
    or below this temperature, checking every second, for at most ``max_wait_s`` (the
    figure is flagged ``cooldown_timeout`` if it is not reached).
    """

    gap_s: float = 0.0
    max_temperature_c: float | None = None
    max_wait_s: float = 300.0


class CommonConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The fields before the engine sections (documented on ``ExperimentConfig``)."""

    name: str | None = None
    # typed and defaulted by the registry (lem.protocol.engines.registry.EngineSections)
    backend: str = ""
    device: DeviceKind = "auto"
    gpu_count: int = 1
    model: ModelConfig = msgspec.field(default_factory=ModelConfig)
    prompts: PromptConfig = msgspec.field(default_factory=PromptConfig)
    batch_size: int = 1
    num_prompts: int = 8
    input_tokens: int = 32
    output_tokens: int = 32
    greedy: bool = True
    ignore_eos: bool = True
    warmup_batches: int = 1
    min_window_s: float | None = None
    min_iterations: int = 1
    timeout_s: float = 3600.0
    contamination_policy: Literal["warn", "abort"] = "warn"
    measure_prefill: bool = False
    grid_intensity_g_per_kwh: float | None = None
    idle_baseline: IdleBaselineConfig = msgspec.field(default_factory=IdleBaselineConfig)
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)
    warmup: WarmupConfig = msgspec.field(default_factory=WarmupConfig)
