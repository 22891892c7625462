"""Experiment configuration types shared by the coordinator and every worker.

These msgspec structs are the single schema of an experiment. The coordinator validates
YAML against them without any backend installed; workers receive them over the wire.
Unknown fields are errors everywhere (``forbid_unknown_fields``).
"""

from __future__ import annotations

import hashlib

import msgspec

from lem.protocol.bounds import value_problems
from lem.protocol.common_config import (
    CooldownConfig,
    DeviceKind,
    DType,
    IdleBaselineConfig,
    ModelConfig,
    ModelSource,
    WarmupConfig,
)
from lem.protocol.engines.registry import ENGINES, BackendName, EngineSections
from lem.protocol.gpu_config import GpuConfig, gpu_problems
from lem.protocol.prompt_config import LengthDistribution, PromptConfig, prompt_problems
from lem.protocol.workload import SloConfig, WorkloadConfig, workload_problems

# Re-exported: the sections live in their own modules, users import them from here (an
# engine's section from its module, ``lem.protocol.engines.<name>``).
__all__ = [
    "BackendName",
    "CooldownConfig",
    "DType",
    "DeviceKind",
    "ExperimentConfig",
    "IdleBaselineConfig",
    "LengthDistribution",
    "ModelConfig",
    "ModelSource",
    "PromptConfig",
    "WarmupConfig",
    "config_hash",
    "config_problems",
    "load_key",
]


class ExperimentConfig(EngineSections, frozen=True, forbid_unknown_fields=True, kw_only=True):
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

    ``backend``: one of the registered engines (``lem.protocol.engines.registry``), each
    with a section of its own settings named as it (``pytorch``, ``vllm``, ``tensorrt``:
    ``lem.protocol.engines.<name>``).

    ``workload``: offline batches (default) or server-style arrivals, and whether token
    times are recorded (``lem.protocol.workload``); ``slo``: latency targets for goodput.

    ``gpu``: a power limit and locked clocks to set on the experiment's GPUs for its cycles
    (``lem.protocol.gpu_config``), always restored afterwards.
    """

    # name … warmup: CommonConfig (lem.protocol.common_config); backend and the engine
    # sections: EngineSections (lem.protocol.engines.registry); their order is the fields'.
    workload: WorkloadConfig = msgspec.field(default_factory=WorkloadConfig)
    slo: SloConfig = msgspec.field(default_factory=SloConfig)
    gpu: GpuConfig = msgspec.field(default_factory=GpuConfig)


def config_problems(config: ExperimentConfig) -> list[tuple[str, str]]:
    """Impossible values msgspec's types cannot express, as (field path, problem) pairs.

    Every number must be finite and bounded and every string printable
    (``lem.protocol.bounds``): such a problem takes the place of a field's first other
    problem, and comes first where the field has none (NaN passes ``<= 0``)."""
    bounds = dict(value_problems(config))
    in_place = [(field, bounds.pop(field, problem)) for field, problem in _problems(config)]
    return list(bounds.items()) + in_place


def _problems(config: ExperimentConfig) -> list[tuple[str, str]]:
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
    problems.extend(gpu_problems(config.gpu, config.device))
    for engine in ENGINES:  # each engine's checks of its section (lem.protocol.engines)
        problems.extend(engine.problems(config, engine.section_of(config)))
    return problems


# The fields ``load_key`` reads; keep the two in step (each engine's: its spec's).
LOAD_KEY_FIELDS = (
    "backend",
    "device",
    "gpu_count",
    "model",
    *(path for engine in ENGINES for path in engine.load_key_paths()),
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
            # what of each engine's section decides the loaded model (its spec's load_key;
            # by default the whole section of the experiment's own engine)
            **{k: v for engine in ENGINES for k, v in engine.load_key_part(config).items()},
        }
    )
    return hashlib.sha256(parts).hexdigest()[:16]


def config_hash(config: ExperimentConfig) -> str:
    """Stable hash of the whole effective configuration (sorted-key JSON)."""
    as_builtins = msgspec.to_builtins(config)
    for engine in ENGINES:  # by default an engine's section only in its own experiments'
        section = engine.hashed_section(config, as_builtins[engine.name])
        if section is None:  # keeps the hashes of experiments from before the section
            del as_builtins[engine.name]
        else:
            as_builtins[engine.name] = section
    if config.prompts.skip == 0:  # keeps the hashes of experiments from before the field
        del as_builtins["prompts"]["skip"]
    if config.workload.sweep is None:  # the same
        del as_builtins["workload"]["sweep"]
    if config.gpu == GpuConfig():  # the same
        del as_builtins["gpu"]
    canonical = msgspec.json.encode(as_builtins, order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]
