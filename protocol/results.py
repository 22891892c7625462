"""Result types: what a worker measured and the environment it measured in.

Every quantity carries its unit in its name. A quantity that could not be measured is
``None`` with a ``*_unavailable_reason`` beside it — never 0.

A ``Measurement`` is composed of sub-records, one per concern: ``work`` (what the window
did), ``energy`` (GPU energy), ``host_energy`` (RAPL), ``phases`` (prefill/decode split),
``memory``, ``preparation`` (load, warmup, cooldown), ``latency``, ``observed`` (telemetry,
other processes), ``steady`` (server mode's steady-state part; these three and the merge
rules in ``lem.protocol.result_parts``) and ``environment``. A field
keeps the name it had when ``Measurement`` was flat (store schema ≤ 4), and no two
sub-records share a field name, so the flat view — the export's columns, old payloads —
maps one-to-one (``lem.protocol.result_payload``).

Every record declares in ``MERGE`` how each of its fields is merged over the shards of a
data-parallel measurement (``Merge``; applied by ``coordinator/execution/shard_merge.py``).
A field without a rule fails ``tests/test_merge_rules.py``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

# Re-exported: the merge rules and the server-side sub-records live in result_parts.py.
from lem.protocol.result_parts import Latency as Latency
from lem.protocol.result_parts import Merge as Merge
from lem.protocol.result_parts import Observed as Observed
from lem.protocol.result_parts import Rules as Rules
from lem.protocol.result_parts import Steady as Steady
from lem.protocol.result_parts import SubRecord as SubRecord

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

    # Shards of one measurement ran on one host under one lem: the first shard's facts,
    # with every shard's GPUs (each once, by UUID).
    MERGE: ClassVar[Rules] = {
        "hostname": Merge.FIRST, "python_version": Merge.FIRST, "lem_version": Merge.FIRST,
        "protocol_version": Merge.FIRST, "backend": Merge.FIRST,
        "backend_version": Merge.FIRST, "packages": Merge.FIRST, "device": Merge.FIRST,
        "gpus": Merge.DERIVED, "driver_version": Merge.FIRST, "cuda_version": Merge.FIRST,
        "nvml_unavailable_reason": Merge.FIRST, "os_release": Merge.FIRST,
        "cpu_model": Merge.FIRST, "cpu_count": Merge.FIRST, "memory_total_mib": Merge.FIRST,
        "lem_revision": Merge.FIRST, "engine_lock": Merge.FIRST,
    }  # fmt: skip


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


class Work(SubRecord, frozen=True, kw_only=True):
    """What the measured window did. ``duration_s`` spans its generate calls, with device
    synchronisation at both edges; counts are totals over its ``repetitions`` passes over
    the prompt set."""

    workload_mode: str = "offline"  # offline batches, or server-style arrivals
    duration_s: float
    num_prompts: int
    batches: int
    repetitions: int = 1  # passes over the prompt set in the window; counts are totals
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float
    min_window_s: float = 0.0  # the window length the worker aimed for
    prompt_set_hash: str | None = None  # SHA-256 of the prompts (texts, or synthetic ids)
    prompt_source: str | None = None  # where the prompts came from and their lengths

    # Shards split the prompts: counts add up; the merged window spans the windows' union
    # (first opening to last end), and throughput is all tokens over that span.
    MERGE: ClassVar[Rules] = {
        "workload_mode": Merge.SAME, "duration_s": Merge.DERIVED, "num_prompts": Merge.SUM,
        "batches": Merge.SUM, "repetitions": Merge.MIN, "input_tokens": Merge.SUM,
        "output_tokens": Merge.SUM, "output_tokens_per_s": Merge.DERIVED,
        "min_window_s": Merge.MAX, "prompt_set_hash": Merge.DERIVED,
        "prompt_source": Merge.DERIVED,
    }  # fmt: skip


class Energy(SubRecord, frozen=True, kw_only=True):
    """GPU energy of the window.

    ``energy_j`` is the sum over the worker's GPUs of the NVML total-energy counter
    difference (gross: idle draw included); ``None`` with ``energy_unavailable_reason`` when
    any GPU could not be read or there is no GPU.

    ``energy_bound_j`` is the counter-quantisation bound: the counter advances only every
    ``energy_counter_period_s``, so each window edge may be off by up to one period of
    average power (bound = 2 × period × avg power).

    ``net_energy_j`` subtracts each GPU's idle baseline (``idle_baselines``) over the
    window's duration; ``None`` with ``net_energy_unavailable_reason`` when gross energy or
    a baseline is missing.
    """

    energy_j: float | None
    energy_unavailable_reason: str | None
    energy_per_output_token_j: float | None
    avg_power_w: float | None
    gpu_energy: list[GpuEnergy]
    energy_counter_period_s: float | None = None
    energy_bound_j: float | None = None
    net_energy_j: float | None = None
    net_energy_per_output_token_j: float | None = None
    net_energy_unavailable_reason: str | None = None
    energy_per_request_j: float | None = None  # gross energy / prompts (requests) served
    output_tokens_per_j: float | None = None  # output tokens / gross energy
    idle_baselines: list[IdleBaselineRecord] = []
    carbon_g: float | None = None  # gCO2e of the gross GPU energy at the configured intensity
    carbon_unavailable_reason: str | None = None

    # Every GPU is one shard's, read by that shard's counter: energies add, per-GPU records
    # join; ratios are recomputed from the sums.
    MERGE: ClassVar[Rules] = {
        "energy_j": Merge.SUM, "energy_unavailable_reason": Merge.FIRST_PRESENT,
        "energy_per_output_token_j": Merge.DERIVED, "avg_power_w": Merge.DERIVED,
        "gpu_energy": Merge.CONCAT, "energy_counter_period_s": Merge.MAX,
        "energy_bound_j": Merge.SUM, "net_energy_j": Merge.SUM,
        "net_energy_per_output_token_j": Merge.DERIVED,
        "net_energy_unavailable_reason": Merge.FIRST_PRESENT,
        "energy_per_request_j": Merge.DERIVED, "output_tokens_per_j": Merge.DERIVED,
        "idle_baselines": Merge.CONCAT, "carbon_g": Merge.SUM,
        "carbon_unavailable_reason": Merge.FIRST_PRESENT,
    }  # fmt: skip


class HostEnergy(SubRecord, frozen=True, kw_only=True):
    """CPU package and DRAM energy of the window from RAPL: the whole host's, not lem's."""

    cpu_energy_j: float | None = None  # RAPL package zones over the window (whole host)
    cpu_energy_unavailable_reason: str | None = None
    dram_energy_j: float | None = None  # RAPL dram zones over the window (whole host)
    dram_energy_unavailable_reason: str | None = None

    # Every shard read the same host over nearly the same span: not added, the largest
    # reading (the merged measurement is flagged host_energy_overlap).
    MERGE: ClassVar[Rules] = {
        "cpu_energy_j": Merge.MAX, "cpu_energy_unavailable_reason": Merge.FIRST,
        "dram_energy_j": Merge.MAX, "dram_energy_unavailable_reason": Merge.FIRST,
    }  # fmt: skip


class Phases(SubRecord, frozen=True, kw_only=True):
    """The prefill/decode split (``lem.workers.workload.phases``): a prefill-only window of
    its own passes, and the decode share of the full window (its energy minus prefill
    energy per pass × passes); ``None`` with ``phase_split_unavailable_reason``."""

    prefill_energy_j: float | None = None  # the prefill-only window (its own passes)
    prefill_duration_s: float | None = None
    prefill_repetitions: int = 0
    prefill_energy_per_input_token_j: float | None = None
    decode_energy_j: float | None = None  # window energy − prefill energy per pass × passes
    decode_energy_per_output_token_j: float | None = None  # per token from decode steps
    phase_split_unavailable_reason: str | None = None

    # The split of every shard or none: energies add, per-token figures pool the tokens.
    MERGE: ClassVar[Rules] = {
        "prefill_energy_j": Merge.DERIVED, "prefill_duration_s": Merge.MAX,
        "prefill_repetitions": Merge.MIN, "prefill_energy_per_input_token_j": Merge.DERIVED,
        "decode_energy_j": Merge.DERIVED, "decode_energy_per_output_token_j": Merge.DERIVED,
        "phase_split_unavailable_reason": Merge.DERIVED,
    }  # fmt: skip


class Memory(SubRecord, frozen=True, kw_only=True):
    """Peak GPU memory (MiB) after loading the model and during inference."""

    peak_gpu_memory_load_mib: float | None
    peak_gpu_memory_inference_mib: float | None
    gpu_memory_unavailable_reason: str | None

    # Each shard's GPU holds its own copy of the model: the largest peak of any GPU.
    MERGE: ClassVar[Rules] = {
        "peak_gpu_memory_load_mib": Merge.MAX, "peak_gpu_memory_inference_mib": Merge.MAX,
        "gpu_memory_unavailable_reason": Merge.FIRST,
    }  # fmt: skip


class Preparation(SubRecord, frozen=True, kw_only=True):
    """What happened before the window: the model load, warmup and cooldown."""

    model_load_s: float
    model_reused: bool
    model_load_count: int
    warmup_batches: int
    warmup_s: float = 0.0  # ``warmup_batches`` is how many ran
    warmup_converged: bool | None = None  # None: a fixed warmup was asked for
    warmup_final_cv: float | None = None  # CV of the last warmup batch durations
    cooldown_s: float = 0.0  # spent pausing and waiting for temperature before the cycle
    start_temperature_c: dict[str, int | None] = {}  # per GPU UUID, after the cooldown
    # The dtype the model's weights ran in: the config's, with "auto" resolved by the
    # engine (e.g. float32 on CPU); None where the engine does not say.
    resolved_dtype: str | None = None
    # Gross GPU energy of the model load (J): the worker's GPUs' counters read just before
    # and just after the engine's load (for a started server: its start and the wait until
    # it is ready). Gross only: the idle draw over the load is NOT subtracted, and the load
    # is not a window (no bound, no flags). None with the reason when this cycle loaded
    # nothing (the model was reused), ran on CPU, had no GPU or its counters failed.
    load_energy_j: float | None = None
    load_energy_unavailable_reason: str | None = None

    # Shards prepared side by side: the longest wait, every warmup batch, every GPU; each
    # shard loaded its own copy on its own GPUs, so load energies add.
    MERGE: ClassVar[Rules] = {
        "model_load_s": Merge.MAX, "model_reused": Merge.ALL, "model_load_count": Merge.MAX,
        "warmup_batches": Merge.SUM, "warmup_s": Merge.MAX, "warmup_converged": Merge.ALL,
        "warmup_final_cv": Merge.MAX, "cooldown_s": Merge.MAX,
        "start_temperature_c": Merge.UNION, "resolved_dtype": Merge.SAME,
        "load_energy_j": Merge.SUM, "load_energy_unavailable_reason": Merge.FIRST_PRESENT,
    }  # fmt: skip


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """One measured window of one experiment cycle: who measured what, when, and its
    sub-records (see the module docstring). ``flags`` name known problems of its figures,
    e.g. ``short_window`` when the energy bound exceeds 1% of the energy.

    A data-parallel worker's part is shard ``shard_index`` of ``shard_count`` of attempt
    ``shard_group``; the merged measurement is a whole one (shard 0 of 1) that lists the
    parts it was merged from in ``shards``.
    """

    experiment_id: str
    cycle: int
    worker_id: str
    started_at_unix_s: float
    window_started_at_unix_s: float | None = None  # wall clock when the window opened
    device: str
    flags: list[str] = []
    work: Work
    energy: Energy
    host_energy: HostEnergy = msgspec.field(default_factory=HostEnergy)
    phases: Phases = msgspec.field(default_factory=Phases)
    memory: Memory
    preparation: Preparation
    latency: Latency = msgspec.field(default_factory=Latency)
    observed: Observed = msgspec.field(default_factory=Observed)
    steady: Steady = msgspec.field(default_factory=Steady)  # server mode's steady part
    environment: Environment
    shard_index: int = 0  # a data-parallel worker's part (of shard_count); merged: 0
    shard_count: int = 1  # 1: a whole measurement, whether or not shards were merged into it
    shard_group: str = ""  # which attempt a shard belongs to (its Run's shard_group)
    shards: list[ShardRecord] = []  # the parts a data-parallel measurement was merged from
    store_schema_version: int | None = None  # set by the store when it records the result

    MERGE: ClassVar[Rules] = {
        "experiment_id": Merge.SAME, "cycle": Merge.SAME, "worker_id": Merge.DERIVED,
        "started_at_unix_s": Merge.MIN, "window_started_at_unix_s": Merge.MIN,
        "device": Merge.SAME, "flags": Merge.DERIVED, "work": Merge.FIELDS,
        "energy": Merge.FIELDS, "host_energy": Merge.FIELDS, "phases": Merge.FIELDS,
        "memory": Merge.FIELDS, "preparation": Merge.FIELDS, "latency": Merge.FIELDS,
        "observed": Merge.FIELDS, "steady": Merge.FIELDS, "environment": Merge.FIELDS,
        "shard_index": Merge.WHOLE, "shard_count": Merge.WHOLE, "shard_group": Merge.WHOLE,
        "shards": Merge.DERIVED, "store_schema_version": Merge.WHOLE,
    }  # fmt: skip


# The sub-records whose fields the flat view of a Measurement lists (``environment`` stays
# one nested object there, as it always was).
SUB_RECORDS: dict[str, type[SubRecord]] = {
    f.name: f.type
    for f in msgspec.structs.fields(Measurement)
    if isinstance(f.type, type) and issubclass(f.type, SubRecord)
}
