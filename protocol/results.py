"""Result types: what a worker measured and the environment it measured in.

Every quantity carries its unit in its name. A quantity that could not be measured is
``None`` with a ``*_unavailable_reason`` beside it — never 0.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from lem.protocol.latency import Goodput, LatencySummary, RequestRecord
from lem.protocol.telemetry import TelemetryWindow

EnergyMethod = Literal["nvml_energy_counter", "nvml_power_integration", "unavailable"]


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU as NVML describes it. ``index`` is NVML's (PCI bus order)."""

    index: int
    uuid: str
    name: str
    memory_total_mib: float | None = None
    power_limit_w: float | None = None
    energy_counter_supported: bool = False
    mig_mode_enabled: bool | None = None
    # Clock settings when the worker started (MHz; None where NVML does not say): the
    # application clocks the GPU runs work at, and the most each clock can reach.
    app_sm_clock_mhz: int | None = None
    app_mem_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    max_mem_clock_mhz: int | None = None


class EngineLock(msgspec.Struct, frozen=True, kw_only=True):
    """The lock a worker's engine environment was made from (``made_from``: it says so in
    its ``lem-env.json``) or, for any other interpreter, the nearest of its backend's locks;
    and whether what was installed there was exactly that lock (``protocol/env_locks.py``)."""

    name: str | None  # the lock's folder under envs/, e.g. "pytorch-cpu"
    sha256: str | None  # SHA-256 of its requirements.txt
    made_from: bool = False
    matches: bool | None = None  # None: could not be checked (unavailable_reason)
    difference_count: int = 0
    summary: str = ""  # e.g. "1 version(s) differ, 3 extra"; "" when it matches
    differences: list[str] = []  # the first few, e.g. "torch: 2.11.0 installed, lock has 2.13.0"
    unavailable_reason: str | None = None


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    """Where a measurement ran: host, software versions and the GPUs the worker used."""

    hostname: str
    python_version: str
    lem_version: str
    protocol_version: int
    backend: str
    backend_version: str | None
    packages: dict[str, str]
    device: str
    gpus: list[GpuInfo] = []
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_unavailable_reason: str | None = None
    os_release: str | None = None  # e.g. "Linux 6.8.0-45-generic (Ubuntu 24.04.1 LTS)"
    cpu_model: str | None = None  # /proc/cpuinfo's "model name"
    cpu_count: int | None = None  # logical CPUs the worker may use
    memory_total_mib: float | None = None  # the host's RAM
    lem_revision: str | None = None  # git commit of lem's code (+dirty); None: not a checkout
    engine_lock: EngineLock | None = None  # None: recorded before locks existed


class GpuEnergy(msgspec.Struct, frozen=True, kw_only=True):
    """Energy of one GPU over one measured window, counted once per window.

    ``energy_j`` is gross; ``net_energy_j`` = max(0, gross − ``idle_power_w`` × duration).
    """

    gpu_uuid: str
    energy_j: float | None
    method: EnergyMethod
    unavailable_reason: str | None = None
    idle_power_w: float | None = None
    net_energy_j: float | None = None


class IdleBaselineRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The idle power baseline a measurement's net energy used, for one GPU."""

    gpu_uuid: str
    power_w: float | None
    cv: float | None
    samples: int
    method: str
    accepted: bool
    measured_at_unix_s: float
    age_s: float
    model_resident: bool
    reason: str | None = None


class ShardRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU worker's part of a data-parallel measurement, as that worker measured it:
    its window's wall-clock start (Unix s) and length (s), its tokens, and its GPUs'
    gross energy (J; None with the reason in the merged measurement's ``gpu_energy``)."""

    shard_index: int
    worker_id: str
    gpu_uuids: list[str]
    window_started_at_unix_s: float | None
    duration_s: float
    num_prompts: int
    output_tokens: int
    output_tokens_per_s: float
    energy_j: float | None


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """One measured window of one experiment cycle.

    ``duration_s`` spans the generate calls of the window, with device synchronisation
    at both edges. ``energy_j`` is the sum over this worker's GPUs of the NVML
    total-energy counter difference (gross: idle draw included); ``None`` with
    ``energy_unavailable_reason`` when any GPU could not be read or there is no GPU.

    ``energy_bound_j`` is the counter-quantisation bound: the counter advances only every
    ``energy_counter_period_s``, so each window edge may be off by up to one period of
    average power (bound = 2 × period × avg power). ``flags`` name known problems of this
    figure, e.g. ``short_window`` when the bound exceeds 1% of the energy.

    ``net_energy_j`` subtracts each GPU's idle baseline (``idle_baselines``) over the
    window's duration; ``None`` with ``net_energy_unavailable_reason`` when gross energy or
    a baseline is missing.

    Latency (``workload_mode`` says how requests arrived): ``ttft_ms``, ``itl_ms``
    (every inter-token gap of every request), ``tpot_ms``, ``e2e_ms`` and ``queue_ms`` summarise
    the per-request table ``requests`` (ms); ``None`` with ``latency_unavailable_reason``
    when token times were not recorded. ``goodput``: requests within the config's SLOs.
    The results store keeps ``requests`` in its own table, not in the JSON payload.
    """

    experiment_id: str
    cycle: int
    worker_id: str
    started_at_unix_s: float
    duration_s: float
    num_prompts: int
    batches: int
    warmup_batches: int
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float
    energy_j: float | None
    energy_unavailable_reason: str | None
    energy_per_output_token_j: float | None
    avg_power_w: float | None
    gpu_energy: list[GpuEnergy]
    peak_gpu_memory_load_mib: float | None
    peak_gpu_memory_inference_mib: float | None
    gpu_memory_unavailable_reason: str | None
    model_load_s: float
    model_reused: bool
    model_load_count: int
    device: str
    environment: Environment
    energy_counter_period_s: float | None = None
    energy_bound_j: float | None = None
    flags: list[str] = []
    net_energy_j: float | None = None
    net_energy_per_output_token_j: float | None = None
    net_energy_unavailable_reason: str | None = None
    energy_per_request_j: float | None = None  # gross energy / prompts (requests) served
    output_tokens_per_j: float | None = None  # output tokens / gross energy
    idle_baselines: list[IdleBaselineRecord] = []
    foreign_processes: str | None = None  # other compute processes seen on our GPUs
    cpu_energy_j: float | None = None  # RAPL package zones over the window (whole host)
    cpu_energy_unavailable_reason: str | None = None
    dram_energy_j: float | None = None  # RAPL dram zones over the window (whole host)
    dram_energy_unavailable_reason: str | None = None
    prefill_energy_j: float | None = None  # the prefill-only window (its own passes)
    prefill_duration_s: float | None = None
    prefill_repetitions: int = 0
    prefill_energy_per_input_token_j: float | None = None
    decode_energy_j: float | None = None  # window energy − prefill energy per pass × passes
    decode_energy_per_output_token_j: float | None = None  # per token from decode steps
    phase_split_unavailable_reason: str | None = None
    warmup_s: float = 0.0  # ``warmup_batches`` is how many ran
    warmup_converged: bool | None = None  # None: a fixed warmup was asked for
    warmup_final_cv: float | None = None  # CV of the last warmup batch durations
    cooldown_s: float = 0.0  # spent pausing and waiting for temperature before the cycle
    start_temperature_c: dict[str, int | None] = {}  # per GPU UUID, after the cooldown
    telemetry: TelemetryWindow | None = None  # the sidecar's samples over the window
    telemetry_unavailable_reason: str | None = None
    carbon_g: float | None = None  # gCO2e of the gross GPU energy at the configured intensity
    carbon_unavailable_reason: str | None = None
    repetitions: int = 1  # passes over the prompt set in the window; counts are totals
    min_window_s: float = 0.0  # the window length the worker aimed for
    prompt_set_hash: str | None = None  # SHA-256 of the prompts (texts, or synthetic ids)
    prompt_source: str | None = None  # where the prompts came from and their lengths
    workload_mode: str = "offline"  # offline batches, or server-style arrivals
    ttft_ms: LatencySummary | None = None  # time to first token, per request
    itl_ms: LatencySummary | None = None  # inter-token latency, every gap of every request
    tpot_ms: LatencySummary | None = None  # time per output token after the first, per request
    e2e_ms: LatencySummary | None = None  # end-to-end latency, per request
    queue_ms: LatencySummary | None = None  # waiting before a request's work began
    latency_unavailable_reason: str | None = None
    goodput: Goodput | None = None  # None: no SLO set, or no latency
    requests: list[RequestRecord] = []  # one record per request of the window
    window_started_at_unix_s: float | None = None  # wall clock when the window opened
    shard_index: int = 0  # a data-parallel worker's part (of shard_count); merged: 0
    shard_count: int = 1  # 1: a whole measurement, whether or not shards were merged into it
    shard_group: str = ""  # which attempt a shard belongs to (its Run's shard_group)
    store_schema_version: int | None = None  # set by the store when it records the result
    shards: list[ShardRecord] = []  # the parts a data-parallel measurement was merged from
