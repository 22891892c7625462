"""The columns of lem's result tables (``lem results export``, ``lem.load_results``).

Column names are stable API (docs/results.md lists them): every quantity carries its unit
in its name (``_j``, ``_s``, ``_ms``, ``_w``, ``_mib``, ``_g``) and in its description. A
value that was not measured is null (None), never 0; a ``*_unavailable_reason`` column
beside it says why where the worker gave a reason.

Each column has a kind — ``str``, ``int``, ``float`` or ``bool`` — that fixes its type in
every format (pandas: ``string``, ``Int64``, ``Float64``, ``boolean``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import msgspec.inspect as mi

from lem.protocol.config import ExperimentConfig
from lem.protocol.engines.registry import ENGINE_NAMES

Kind = Literal["str", "int", "float", "bool"]

# ---- measurement level: one row per stored cycle (ok and failed) ----------------

_IDENTITY: list[tuple[str, Kind, str]] = [
    ("campaign_id", "str", "campaign id"),
    ("campaign_name", "str", "campaign name"),
    ("experiment_id", "str", "experiment id"),
    ("experiment_name", "str", "experiment name (null: none given)"),
    ("experiment_position", "int", "experiment's place in the campaign's plan, from 0"),
]

_MEASUREMENT_HEAD: list[tuple[str, Kind, str]] = [
    ("cycle", "int", "cycle number, from 0"),
    ("status", "str", "ok or failed"),
    ("failure_reason", "str", "why the cycle failed (null: ok)"),
    ("attempts", "int", "attempts the cycle took in all (null: not counted)"),
    ("worker_id", "str", "the worker that ran the cycle"),
    ("recorded_at_unix_s", "float", "when the result was stored, s since the Unix epoch"),
    ("started_at_unix_s", "float", "when the measured window began, s since the Unix epoch"),
]

_SETUP: list[tuple[str, Kind, str]] = [
    ("model", "str", "model name (or path) from the config"),
    ("model_source", "str", "builtin, random, hf or gguf"),
    ("dtype", "str", "model dtype from the config"),
    ("backend", "str", f"inference engine ({', '.join(ENGINE_NAMES)})"),
    ("batch_size", "int", "prompts per batch (config), count"),
    ("workload_mode", "str", "offline batches or server-style arrivals"),
]

_MEASURED: list[tuple[str, Kind, str]] = [
    ("device", "str", "the device the worker ran on (cpu, cuda, cuda:0, ...)"),
    ("num_prompts", "int", "prompts served in the window (all passes), count"),
    ("batches", "int", "batches in the window, count"),
    ("repetitions", "int", "passes over the prompt set in the window, count"),
    ("warmup_batches", "int", "warmup batches run before the window, count"),
    ("input_tokens", "int", "input tokens over the window (all prompts), tokens"),
    ("output_tokens", "int", "output tokens over the window (all prompts), tokens"),
    ("duration_s", "float", "measured window length, s"),
    ("output_tokens_per_s", "float", "output tokens / duration, tokens/s"),
    ("energy_j", "float", "gross GPU energy over the window (all GPUs, idle included), J"),
    ("energy_unavailable_reason", "str", "why energy_j is null"),
    ("energy_method", "str", "how GPU energy was read (nvml_energy_counter, ...; ';'-joined)"),
    ("energy_per_output_token_j", "float", "gross GPU energy / output tokens, J/token"),
    ("energy_per_request_j", "float", "gross GPU energy / prompts served, J/request"),
    ("output_tokens_per_j", "float", "output tokens / gross GPU energy, tokens/J"),
    ("net_energy_j", "float", "GPU energy minus idle baseline × duration, J"),
    ("net_energy_per_output_token_j", "float", "net GPU energy / output tokens, J/token"),
    ("net_energy_unavailable_reason", "str", "why net_energy_j is null"),
    ("idle_power_w", "float", "idle baseline power summed over the GPUs, W"),
    ("energy_bound_j", "float", "energy counter quantisation bound (±), J"),
    ("energy_counter_period_s", "float", "energy counter update period, s"),
    ("avg_power_w", "float", "gross energy / duration, W"),
    ("prefill_energy_j", "float", "energy of the prefill-only window, J"),
    ("prefill_duration_s", "float", "length of the prefill-only window, s"),
    ("prefill_energy_per_input_token_j", "float", "prefill energy / input token, J/token"),
    ("decode_energy_j", "float", "window energy minus its prefill share, J"),
    ("decode_energy_per_output_token_j", "float", "decode energy / decode token, J/token"),
    ("phase_split_unavailable_reason", "str", "why the prefill/decode split is null"),
    ("cpu_energy_j", "float", "RAPL CPU package energy over the window (whole host), J"),
    ("cpu_energy_unavailable_reason", "str", "why cpu_energy_j is null"),
    ("dram_energy_j", "float", "RAPL DRAM energy over the window (whole host), J"),
    ("dram_energy_unavailable_reason", "str", "why dram_energy_j is null"),
    ("carbon_g", "float", "gCO2e of the gross GPU energy at the configured intensity, g"),
    ("carbon_unavailable_reason", "str", "why carbon_g is null"),
    ("peak_gpu_memory_load_mib", "float", "peak GPU memory after loading the model, MiB"),
    ("peak_gpu_memory_inference_mib", "float", "peak GPU memory during inference, MiB"),
    ("gpu_memory_unavailable_reason", "str", "why GPU memory figures are null"),
    ("model_load_s", "float", "time to load the model (0 when reused), s"),
    ("model_reused", "bool", "the worker reused an already loaded model"),
    ("load_energy_j", "float", "gross GPU energy of the model load (idle included), J"),
    ("load_energy_unavailable_reason", "str", "why load_energy_j is null (e.g. model reused)"),
    ("warmup_s", "float", "time spent warming up before the window, s"),
    ("warmup_converged", "bool", "warmup batch times settled (null: fixed warmup)"),
    ("cooldown_s", "float", "time spent cooling down before the cycle, s"),
]

# Per-request latency summaries of a cycle (``Measurement.ttft_ms`` etc.), ms.
LATENCY_METRICS = {
    "ttft": "time to first token",
    "itl": "inter-token latency (every gap of every request)",
    "tpot": "time per output token after the first",
    "e2e": "end-to-end request latency",
}
LATENCY_PERCENTILES = ("p50", "p90", "p99")
_LATENCY: list[tuple[str, Kind, str]] = [
    (f"{m}_{p}_ms", "float", f"{what}, {p} over the cycle's requests, ms")
    for m, what in LATENCY_METRICS.items()
    for p in LATENCY_PERCENTILES
] + [
    ("latency_unavailable_reason", "str", "why the latency figures are null"),
    ("goodput_share", "float", "share of requests within the SLOs, fraction 0-1"),
]

# Server mode's steady-state part (docs/methodology.md, "Steady-state windows in server
# mode"); null offline and, with steady_unavailable_reason, where a run has none.
_STEADY: list[tuple[str, Kind, str]] = [
    ("steady_window_start_s", "float", "steady window's opening, s since the window opened"),
    ("steady_window_end_s", "float", "steady window's close, s since the window opened"),
    ("steady_duration_s", "float", "steady window length, s"),
    ("steady_level", "float", "requests in flight at the steady level, count"),
    ("steady_requests", "int", "requests sent inside the steady window, count"),
    ("steady_output_tokens", "int", "output tokens produced inside the steady window, tokens"),
    ("steady_energy_j", "float", "gross GPU energy over the steady window, J"),
    ("steady_energy_per_output_token_j", "float", "steady energy / steady tokens, J/token"),
    ("steady_energy_method", "str", "how steady energy was read (sampled_energy_counter, ...)"),
    ("steady_energy_bound_j", "float", "worst-case error of steady_energy_j (±), J"),
    ("steady_unavailable_reason", "str", "why the steady figures (or their energy) are null"),
]

_ENVIRONMENT: list[tuple[str, Kind, str]] = [
    ("flags", "str", "known problems of the cycle's figures, ';'-joined (null: none)"),
    ("gpu_count", "int", "GPUs the worker used, count"),
    ("gpu_names", "str", "GPU model names, ';'-joined (null: no GPU)"),
    ("gpu_uuids", "str", "GPU UUIDs, ';'-joined (null: no GPU)"),
    ("gpu_power_limits_w", "str", "GPU power limits, W, ';'-joined (null: no GPU)"),
    ("driver_version", "str", "NVIDIA driver version"),
    ("cuda_version", "str", "CUDA version NVML reports"),
    ("backend_version", "str", "inference engine version"),
    ("packages", "str", "worker's library versions, 'name=version' ';'-joined"),
    ("engine_lock", "str", "lock of the engine environment (envs/<name>; null: none or older)"),
    ("engine_lock_sha256", "str", "SHA-256 of that lock's requirements.txt"),
    ("engine_lock_matches", "bool", "the environment held exactly the lock's packages"),
    ("python_version", "str", "worker's Python version"),
    ("lem_version", "str", "lem version of the worker"),
    ("hostname", "str", "host the worker ran on"),
    ("schema_version", "int", "results store schema version the row was read from"),
    ("prompt_set_hash", "str", "SHA-256 of the prompts"),
    ("prompt_source", "str", "where the prompts came from"),
]


def _config_kind(t: mi.Type) -> Kind:
    """The column kind of one config leaf type (structs, lists, mixed unions: JSON text)."""
    if isinstance(t, mi.UnionType):
        kinds = {_config_kind(u) for u in t.types if not isinstance(u, mi.NoneType)}
        return kinds.pop() if len(kinds) == 1 else "str"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "float"
    if isinstance(t, mi.LiteralType):
        kinds = {_config_kind(mi.type_info(type(v))) for v in t.values}
        return kinds.pop() if len(kinds) == 1 else "str"
    return "str"


def _config_leaves(t: mi.Type, prefix: str = "") -> dict[str, Kind]:
    """Dotted leaf path → kind for every field of a config struct (nested structs walked;
    an optional struct is one leaf, its value JSON text)."""
    if isinstance(t, mi.StructType):
        leaves: dict[str, Kind] = {}
        for f in t.fields:
            leaves.update(_config_leaves(f.type, f"{prefix}.{f.name}" if prefix else f.name))
        return leaves
    return {prefix: _config_kind(t)}


CONFIG_KINDS: dict[str, Kind] = _config_leaves(mi.type_info(ExperimentConfig))
_CONFIG: list[tuple[str, Kind, str]] = [
    (
        f"config.{leaf}",
        kind,
        f"effective config field {leaf} (unit as its name says; docs/campaigns.md)",
    )
    for leaf, kind in CONFIG_KINDS.items()
]

MEASUREMENT_SPEC: list[tuple[str, Kind, str]] = [
    *_IDENTITY,
    *_MEASUREMENT_HEAD,
    *_SETUP,
    *_MEASURED,
    *_LATENCY,
    *_STEADY,
    *_ENVIRONMENT,
    *_CONFIG,
]

# ---- experiment level: one row per experiment, statistics over its ok cycles ------

# Per-cycle measurement columns summarised per experiment: column → (its unit for the
# docs, the name of its coefficient-of-variation column: the unit suffix dropped).
STAT_METRICS: dict[str, tuple[str, str]] = {
    "energy_per_output_token_j": ("J/token", "energy_per_output_token_cv"),
    "net_energy_per_output_token_j": ("J/token", "net_energy_per_output_token_cv"),
    "output_tokens_per_s": ("tokens/s", "output_tokens_per_s_cv"),
    "avg_power_w": ("W", "avg_power_cv"),
    "energy_j": ("J", "energy_cv"),
    "duration_s": ("s", "duration_cv"),
    "ttft_p50_ms": ("ms", "ttft_p50_cv"),
    "itl_p50_ms": ("ms", "itl_p50_cv"),
    "tpot_p50_ms": ("ms", "tpot_p50_cv"),
    "e2e_p50_ms": ("ms", "e2e_p50_cv"),
}
STATISTICS: dict[str, tuple[Kind, str]] = {
    "n": ("int", "ok cycles with a value, count"),
    "mean": ("float", "mean over ok cycles"),
    "median": ("float", "median over ok cycles"),
    "std": ("float", "sample standard deviation over ok cycles (null: < 2 cycles)"),
    "ci95_low": ("float", "95% CI of the mean, low end (Student's t; null: < 2 cycles)"),
    "ci95_high": ("float", "95% CI of the mean, high end (Student's t; null: < 2 cycles)"),
}


def stat_column(metric: str, statistic: str) -> str:
    """``energy_per_output_token_j_mean``; the CV (unitless) drops the unit suffix."""
    return STAT_METRICS[metric][1] if statistic == "cv" else f"{metric}_{statistic}"


def _stats_spec() -> list[tuple[str, Kind, str]]:
    spec: list[tuple[str, Kind, str]] = []
    for metric, (unit, cv_column) in STAT_METRICS.items():
        for statistic, (kind, what) in STATISTICS.items():
            shown = "" if statistic == "n" else f", {unit}"
            spec.append((stat_column(metric, statistic), kind, f"{metric}: {what}{shown}"))
        spec.append((cv_column, "float", f"{metric}: std / mean over ok cycles, unitless"))
    return spec


EXPERIMENT_SPEC: list[tuple[str, Kind, str]] = [
    *_IDENTITY,
    *_SETUP,
    ("cycles_ok", "int", "ok cycles stored, count"),
    ("cycles_failed", "int", "failed cycles stored, count"),
    ("failure_reasons", "str", "distinct failure reasons, ';'-joined (null: none)"),
    *_stats_spec(),
    ("max_energy_relative_bound", "float", "worst energy_bound_j / energy_j, fraction"),
    ("flags", "str", "every flag any ok cycle carried, ';'-joined (null: none)"),
    ("gpu_names", "str", "distinct GPU model names of the ok cycles, ';'-joined"),
    ("gpu_uuids", "str", "distinct GPU UUIDs of the ok cycles, ';'-joined"),
    ("hostname", "str", "distinct hosts of the ok cycles, ';'-joined"),
    ("lem_version", "str", "distinct lem versions of the ok cycles, ';'-joined"),
    *_CONFIG,
]

MEASUREMENT_COLUMNS: dict[str, str] = {name: what for name, _, what in MEASUREMENT_SPEC}
# An experiment's identity, setup and config columns, the same in every row of it at both
# levels (and in this order at both).
SHARED_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in [*_IDENTITY, *_SETUP, *_CONFIG])
EXPERIMENT_COLUMNS: dict[str, str] = {name: what for name, _, what in EXPERIMENT_SPEC}
KINDS: dict[str, Kind] = {
    name: kind for name, kind, _ in [*MEASUREMENT_SPEC, *EXPERIMENT_SPEC]
}  # a name has one kind at both levels

Level = Literal["measurement", "experiment"]
LEVELS: tuple[Level, ...] = ("measurement", "experiment")


def columns(level: Level) -> dict[str, str]:
    """Column name → description (with unit) of one level, in table order."""
    return MEASUREMENT_COLUMNS if level == "measurement" else EXPERIMENT_COLUMNS


def coerce(kind: Kind, value: Any) -> Any:
    """``value`` as a column of ``kind`` holds it; None stays None (never 0)."""
    if value is None:
        return None
    if kind == "str":
        if isinstance(value, str):
            return value
        return msgspec.json.encode(value, order="sorted").decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    return float(value)
