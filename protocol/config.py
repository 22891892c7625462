"""Experiment configuration types shared by the coordinator and every worker.

These msgspec structs are the single schema of an experiment. The coordinator validates
YAML against them without any backend installed; workers receive them over the wire.
Unknown fields are errors everywhere (``forbid_unknown_fields``).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from lem.protocol.prompt_config import LengthDistribution, PromptConfig, prompt_problems
from lem.protocol.pytorch_config import PyTorchConfig, pytorch_problems
from lem.protocol.tensorrt_config import TensorRtConfig, tensorrt_problems
from lem.protocol.vllm_config import VllmConfig, vllm_problems
from lem.protocol.workload import SloConfig, WorkloadConfig, workload_problems

ModelSource = Literal["builtin", "random", "hf", "gguf"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
DeviceKind = Literal["auto", "cuda", "cpu"]
BackendName = Literal["pytorch", "vllm", "tensorrt"]

# Re-exported: the sections live in their own modules, users import them from here.
__all__ = [
    "BackendName",
    "ExperimentConfig",
    "LengthDistribution",
    "ModelConfig",
    "PromptConfig",
    "PyTorchConfig",
    "TensorRtConfig",
    "config_hash",
    "config_problems",
    "load_key",
]


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


class ExperimentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One point of a campaign: everything a worker needs to run one measurement.

    Token counts are per prompt. ``batch_size`` prompts are generated together;
    ``num_prompts`` prompts make one measured window (the last batch may be smaller).
    ``warmup_batches`` batches run before the window and are not measured.

    The measured window repeats the whole prompt set until it has lasted ``min_window_s``
    seconds and run ``min_iterations`` passes. ``min_window_s`` left unset means: long
    enough that the energy counter's quantisation bound is at most 0.5% of the window's
    energy (2 × counter period / 0.005 = 40 s for a 0.1 s counter), and 0 when no GPU
    energy is measured (CPU runs). Set it to 0 to measure one pass whatever its length.

    ``contamination_policy``: a compute process other than this worker's on a measured GPU
    flags the figure ``contaminated`` (``warn``) or fails the cycle (``abort``).

    ``measure_prefill``: after the window, measure a prefill-only window (the same passes,
    one new token per prompt) to split energy into prefill and decode.

    ``grid_intensity_g_per_kwh``: the carbon intensity of the electricity (gCO2e/kWh) that
    turns gross GPU energy into ``carbon_g``. No default: grids range from a few tens to
    several hundred g/kWh, so any single default would misstate most sites.

    ``vllm``: the vLLM backend's engine settings (``lem.protocol.vllm_config``);
    ``tensorrt``: the TensorRT-LLM backend's (experimental; ``lem.protocol.tensorrt_config``).

    ``workload``: offline batches (default) or server-style arrivals, and whether token
    times are recorded (``lem.protocol.workload``); ``slo``: latency targets for goodput.
    """

    name: str | None = None
    backend: BackendName = "pytorch"
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
    pytorch: PyTorchConfig = msgspec.field(default_factory=PyTorchConfig)
    vllm: VllmConfig = msgspec.field(default_factory=VllmConfig)
    tensorrt: TensorRtConfig = msgspec.field(default_factory=TensorRtConfig)
    workload: WorkloadConfig = msgspec.field(default_factory=WorkloadConfig)
    slo: SloConfig = msgspec.field(default_factory=SloConfig)


def config_problems(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Impossible values msgspec's types cannot express, as (field path, problem) pairs."""
    problems: list[tuple[str, str]] = []
    positive = {
        "batch_size": config.batch_size,
        "num_prompts": config.num_prompts,
        "input_tokens": config.input_tokens,
        "output_tokens": config.output_tokens,
        "gpu_count": config.gpu_count,
    }
    for field, value in positive.items():
        if value < 1:
            problems.append((field, f"must be >= 1, got {value}"))
    if config.min_iterations < 1:
        problems.append(("min_iterations", f"must be >= 1, got {config.min_iterations}"))
    if config.min_window_s is not None and config.min_window_s < 0:
        problems.append(("min_window_s", f"must be >= 0, got {config.min_window_s}"))
    baseline = config.idle_baseline
    for name in ("window_s", "sample_interval_s", "cv_threshold", "max_wait_s", "max_age_s"):
        if getattr(baseline, name) <= 0:
            problems.append(
                (f"idle_baseline.{name}", f"must be > 0, got {getattr(baseline, name)}")
            )
    if baseline.window_s > baseline.max_wait_s:
        problems.append(("idle_baseline.window_s", "must not exceed idle_baseline.max_wait_s"))
    if config.grid_intensity_g_per_kwh is not None and config.grid_intensity_g_per_kwh < 0:
        problems.append(("grid_intensity_g_per_kwh", "must be >= 0"))
    warmup = config.warmup
    if warmup.until_cv is not None and warmup.until_cv <= 0:
        problems.append(("warmup.until_cv", f"must be > 0, got {warmup.until_cv}"))
    if warmup.window < 2:
        problems.append(("warmup.window", f"must be >= 2, got {warmup.window}"))
    if warmup.max_batches < 1 or warmup.max_s <= 0:
        problems.append(("warmup", "max_batches must be >= 1 and max_s > 0"))
    if config.cooldown.gap_s < 0 or config.cooldown.max_wait_s < 0:
        problems.append(("cooldown", "gap_s and max_wait_s must be >= 0"))
    if config.warmup_batches < 0:
        problems.append(("warmup_batches", f"must be >= 0, got {config.warmup_batches}"))
    if config.timeout_s <= 0:
        problems.append(("timeout_s", f"must be > 0, got {config.timeout_s}"))
    model = config.model
    if model.source in ("hf", "gguf") and not model.path:
        problems.append(("model.path", f"is required when model.source is '{model.source}'"))
    if model.source in ("builtin", "random") and model.path:
        problems.append(("model.path", f"is not used when model.source is '{model.source}'"))
    if model.source == "random" and not model.name:
        problems.append(("model.name", "is required when model.source is 'random'"))
    problems.extend(prompt_problems(config.prompts, config.input_tokens, config.output_tokens))
    problems.extend(workload_problems(config))
    problems.extend(vllm_problems(config))
    problems.extend(pytorch_problems(config))
    problems.extend(tensorrt_problems(config))
    return problems


# The fields ``load_key`` reads; keep the two in step.
LOAD_KEY_FIELDS = (
    "backend",
    "device",
    "gpu_count",
    "model",
    "pytorch.attn_implementation",
    "pytorch.multi_gpu",
    "vllm",
    "tensorrt",
)


def affects_load_key(dotted: str) -> bool:
    """Whether setting the dotted field ``dotted`` can change ``load_key`` (it is one of
    ``LOAD_KEY_FIELDS``, lies under one, or is a section holding one)."""
    return any(
        dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".")
        for key in LOAD_KEY_FIELDS
    )


def load_key(config: ExperimentConfig) -> str:
    """Hash of everything that decides the loaded model; equal keys reuse a loaded model."""
    parts = msgspec.json.encode(
        {
            "backend": config.backend,
            "device": config.device,
            "gpu_count": config.gpu_count,
            "model": config.model,
            "attn": config.pytorch.attn_implementation,
            # one worker per GPU (data) or one worker over all of them (shard)
            **({"multi_gpu": "data"} if config.pytorch.multi_gpu == "data" else {}),
            # every vLLM setting is an engine argument: a change builds a new engine
            **({"vllm": config.vllm} if config.backend == "vllm" else {}),
            # likewise TensorRT-LLM's: engine or runtime settings of one LLM instance
            **({"tensorrt": config.tensorrt} if config.backend == "tensorrt" else {}),
        }
    )
    return hashlib.sha256(parts).hexdigest()[:16]


def config_hash(config: ExperimentConfig) -> str:
    """Stable hash of the whole effective configuration (sorted-key JSON)."""
    as_builtins = msgspec.to_builtins(config)
    if config.backend != "vllm":  # keeps the hashes of experiments from before the section
        del as_builtins["vllm"]
    if config.backend != "tensorrt":  # likewise for the tensorrt section
        del as_builtins["tensorrt"]
    else:  # where engines are kept changes no measurement
        del as_builtins["tensorrt"]["engine_cache_dir"]
    if config.pytorch.compile is None:  # likewise for pytorch.compile's default
        del as_builtins["pytorch"]["compile"]
    if config.pytorch.multi_gpu == "shard":  # and for the fields added since
        del as_builtins["pytorch"]["multi_gpu"]
    if config.prompts.skip == 0:
        del as_builtins["prompts"]["skip"]
    canonical = msgspec.json.encode(as_builtins, order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]
