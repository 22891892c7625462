"""One measurement cycle: run the backend inside an energy window, build the Measurement."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from lem.protocol.devices.rapl import RaplDiscovery, RaplMeter
from lem.protocol.latency_stats import load_above_capacity
from lem.protocol.messages import Run
from lem.protocol.results import (
    Energy,
    Environment,
    GpuEnergy,
    HostEnergy,
    Latency,
    Measurement,
    Memory,
    Observed,
    Phases,
    Preparation,
    Work,
)
from lem.protocol.telemetry import TelemetryWindow
from lem.workers.engines.base import Backend, BackendError, GenerationStats, PhaseCallback
from lem.workers.metering.contamination import ProcessLister, ProcessWatch
from lem.workers.metering.cooldown import ThermalReader, cool_down
from lem.workers.metering.energy import CounterReader, EnergyWindow, WindowEnergy
from lem.workers.metering.idle_power import BaselineKeeper, NetEnergy
from lem.workers.metering.power_limit import PowerLimitReader, with_power_limits
from lem.workers.metering.telemetry import Sampler
from lem.workers.metering.window_policy import judge_window, min_window_s_for
from lem.workers.metering.window_telemetry import (
    MonotonicEdges,
    fill_from_power,
    read_telemetry,
    telemetry_flags,
)
from lem.workers.runtime.start_barrier import StartBarrier
from lem.workers.workload.phases import split_phases, trusted_prefill_energy
from lem.workers.workload.request_latency import latency_fields
from lem.workers.workload.scenarios.window import Edges
from lem.workers.workload.side_energy import (
    CPU_RUN_REASON,
    carbon,
    host_energy,
    load_energy,
    rapl_meter,
)
from lem.workers.workload.steady import NO_STEADY_FLAG, steady_figures


@dataclass
class MeasurementContext:
    """What a worker keeps between experiments: backend, environment, energy counters."""

    worker_id: str
    backend: Backend
    environment: Environment
    counters: CounterReader | None
    gpu_uuids: list[str]
    energy_unavailable_reason: str | None
    counter_period_s: float | None = None  # the slowest update period of our GPUs' counters
    baselines: BaselineKeeper | None = None  # None: no GPU power to read
    processes: ProcessLister | None = None  # None: no GPU processes to list
    rapl: RaplDiscovery | None = None  # None: CPU/DRAM energy not looked for
    thermal: ThermalReader | None = None  # None: no GPU temperatures to read
    power_limits: PowerLimitReader | None = None  # None: the start's limits stand
    sampler: Sampler | None = None  # the telemetry sidecar; None with the reason below
    sampler_unavailable_reason: str | None = None
    model_resident: bool = False  # a model stays loaded after a worker's first experiment


def resolve_min_window_s(command: Run, context: MeasurementContext) -> float:
    """The config's ``min_window_s``, else what keeps the quantisation bound ≤ 0.5%.

    No energy is measured on CPU runs or without counters: then one pass is enough.
    """
    if command.config.min_window_s is not None:
        return command.config.min_window_s
    if context.counters is None or command.config.device == "cpu":
        return 0.0
    if context.counter_period_s is None:
        return min_window_s_for(0.1)  # the Volta+ period: the figure is flagged anyway
    return min_window_s_for(context.counter_period_s)


def measure(
    command: Run,
    context: MeasurementContext,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    go: threading.Event | None = None,
) -> Measurement:
    """Run one cycle of ``command`` and return its measurement (energy in J, time in s).

    With ``command.start_barrier`` the window opens only once ``go`` is set (the
    coordinator's ``Go``, see ``lem.workers.runtime.start_barrier``)."""
    config = command.config
    on_gpu = config.device != "cpu" and bool(context.gpu_uuids)
    environment = with_power_limits(context.environment, context.power_limits)  # in force now
    cooled = cool_down(config.cooldown, context.thermal, context.gpu_uuids if on_gpu else [])
    baselines = context.baselines if config.idle_baseline.enabled else None
    if baselines is not None and config.device != "cpu":
        baselines.refresh(
            config.idle_baseline,
            context.model_resident,
            lambda: on_phase("baseline", f"{config.idle_baseline.window_s:g} s of idle power"),
        )
    window = EnergyWindow(context.counters, context.gpu_uuids, context.energy_unavailable_reason)
    min_window_s = resolve_min_window_s(command, context)
    watch = None
    outer: list[StartBarrier | ProcessWatch | RaplMeter | MonotonicEdges] = []
    if context.processes is not None and config.device != "cpu":
        # an engine's own processes (a server it started: ``own_pids()``) are lem's
        companions = getattr(context.backend, "own_pids", None)
        watch = ProcessWatch(context.processes, context.gpu_uuids, companions=companions)
        outer.append(watch)
    rapl = rapl_meter(context.rapl)
    if rapl is not None:
        outer.append(rapl)
    clock_edges = MonotonicEdges()
    if command.start_barrier:
        barrier = StartBarrier(go or threading.Event(), cancel, on_phase, config.timeout_s)
        outer.insert(0, barrier)
    edges = Edges([*outer, clock_edges, window])  # the GPU counter reads sit innermost
    prefill_window = None
    if config.measure_prefill and on_gpu:
        prefill_window = EnergyWindow(
            context.counters, context.gpu_uuids, context.energy_unavailable_reason
        )
    # the load's energy, kept apart from the window's (read only around a load on GPUs)
    load_window = None
    if on_gpu:
        load_window = EnergyWindow(
            context.counters, context.gpu_uuids, context.energy_unavailable_reason
        )
    started_at_unix_s = time.time()
    stats = context.backend.run(
        config, edges, cancel, on_phase, min_window_s, prefill_window, load_window
    )
    context.model_resident = True
    if watch is not None and watch.foreign and config.contamination_policy == "abort":
        raise BackendError(f"foreign compute process(es) on measured GPU(s): {watch.describe()}")
    telemetry, telemetry_reason = read_telemetry(
        context.sampler if on_gpu else None,
        clock_edges,
        context.sampler_unavailable_reason if on_gpu else "the experiment ran on CPU",
    )
    energy = fill_from_power(window.result(), telemetry)
    if stats.device == "cpu" and context.gpu_uuids:
        energy = WindowEnergy(
            [
                GpuEnergy(
                    gpu_uuid=u,
                    energy_j=None,
                    method="unavailable",
                    unavailable_reason=CPU_RUN_REASON,
                )
                for u in context.gpu_uuids
            ],
            None,
            CPU_RUN_REASON,
            energy.window_duration_s,
        )
    duration_s = stats.duration_s
    energy_per_token_j = None
    avg_power_w = None
    if energy.energy_j is not None:
        if stats.output_tokens > 0:
            energy_per_token_j = energy.energy_j / stats.output_tokens
        if duration_s > 0:
            avg_power_w = energy.energy_j / duration_s
    bound_j: float | None = None
    flags: list[str] = []
    if energy.energy_j is not None:
        verdict = judge_window(
            energy.energy_j, duration_s, context.counter_period_s,
            sampled_power_w=_sampled_power_w(telemetry),
        )  # fmt: skip
        bound_j, flags = verdict.bound_j, verdict.flags
    net = _net_energy(energy, duration_s, baselines)
    all_flags = {*flags, *net.flags, *_mig(context), *telemetry_flags(telemetry)}
    all_flags.update(stats.engine_flags)
    if watch is not None:
        all_flags.update(watch.flags())
    if any(g.method == "nvml_power_integration" for g in net.per_gpu):
        all_flags.add("power_integration")
    if not cooled.reached:
        all_flags.add("cooldown_timeout")
    if stats.warmup_converged is False:
        all_flags.add("warmup_not_converged")
    latency = latency_fields(
        stats.timed_requests,
        stats.window_started_s,
        duration_s,
        config.slo,
        stats.latency_unavailable_reason,
    )
    growing = config.workload.mode == "server" and load_above_capacity(latency["requests"])
    if growing:
        all_flags.add("load_above_capacity")
    steady = steady_figures(
        config, stats.timed_requests, stats.window_started_s, duration_s, growing,
        context.sampler if on_gpu and energy.energy_j is not None else None,
        clock_edges.begin_s, context.counter_period_s, energy.unavailable_reason,
    )  # fmt: skip
    if config.workload.mode == "server" and steady.steady_window_start_s is None:
        all_flags.add(NO_STEADY_FLAG)
    flags = sorted(all_flags)
    return Measurement(
        experiment_id=command.experiment_id,
        cycle=command.cycle,
        worker_id=context.worker_id,
        started_at_unix_s=started_at_unix_s,
        window_started_at_unix_s=clock_edges.begin_unix_s,
        device=stats.device,
        flags=flags,
        work=Work(
            workload_mode=config.workload.mode,
            duration_s=duration_s,
            num_prompts=stats.num_prompts,
            batches=stats.batches,
            repetitions=stats.repetitions,
            input_tokens=stats.input_tokens,
            output_tokens=stats.output_tokens,
            output_tokens_per_s=stats.output_tokens / duration_s if duration_s > 0 else 0.0,
            min_window_s=min_window_s,
            prompt_set_hash=stats.prompt_set_hash,
            prompt_source=stats.prompt_source,
        ),
        energy=Energy(
            energy_j=energy.energy_j,
            energy_unavailable_reason=energy.unavailable_reason,
            energy_per_output_token_j=energy_per_token_j,
            avg_power_w=avg_power_w,
            gpu_energy=net.per_gpu,
            energy_counter_period_s=context.counter_period_s,
            energy_bound_j=bound_j,
            net_energy_j=net.net_energy_j,
            net_energy_per_output_token_j=(
                net.net_energy_j / stats.output_tokens
                if net.net_energy_j is not None and stats.output_tokens > 0
                else None
            ),
            net_energy_unavailable_reason=net.unavailable_reason,
            energy_per_request_j=(
                energy.energy_j / stats.num_prompts
                if energy.energy_j is not None and stats.num_prompts > 0
                else None
            ),
            output_tokens_per_j=(
                stats.output_tokens / energy.energy_j if energy.energy_j else None
            ),
            idle_baselines=baselines.records() if baselines is not None else [],
            **carbon(energy.energy_j, config.grid_intensity_g_per_kwh),
        ),
        host_energy=HostEnergy(**host_energy(rapl, context.rapl)),
        phases=Phases(
            **_phase_fields(energy.energy_j, stats, prefill_window, context.counter_period_s)
        ),
        memory=Memory(
            peak_gpu_memory_load_mib=stats.peak_gpu_memory_load_mib,
            peak_gpu_memory_inference_mib=stats.peak_gpu_memory_inference_mib,
            gpu_memory_unavailable_reason=stats.gpu_memory_unavailable_reason,
        ),
        preparation=Preparation(
            model_load_s=stats.model_load_s,
            model_reused=stats.model_reused,
            model_load_count=stats.model_load_count,
            warmup_batches=stats.warmup_batches,
            warmup_s=stats.warmup_s,
            warmup_converged=stats.warmup_converged,
            warmup_final_cv=stats.warmup_final_cv,
            cooldown_s=cooled.waited_s,
            start_temperature_c=cooled.temperatures_c,
            resolved_dtype=stats.resolved_dtype,
            **load_energy(load_window, stats, context.gpu_uuids),
        ),
        latency=Latency(**latency),
        observed=Observed(
            telemetry=telemetry,
            telemetry_unavailable_reason=telemetry_reason,
            foreign_processes=(watch.describe() or None) if watch is not None else None,
        ),
        steady=steady,
        environment=environment,
        shard_index=command.shard_index,
        shard_count=command.shard_count,
        shard_group=command.shard_group,
    )


def _sampled_power_w(telemetry: TelemetryWindow | None) -> float | None:
    """Sum over GPUs of the sampler's mean power in the window (W); None if any is missing."""
    if telemetry is None or not telemetry.per_gpu:
        return None
    powers_w = [g.mean_power_w for g in telemetry.per_gpu]
    return None if any(p is None for p in powers_w) else sum(p for p in powers_w if p)


def _net_energy(
    energy: WindowEnergy, duration_s: float, baselines: BaselineKeeper | None
) -> NetEnergy:
    """Net energy from the kept baselines, or None with the reason it cannot be had."""
    if energy.energy_j is not None and baselines is not None:
        return baselines.net(energy, duration_s)
    if energy.energy_j is None:
        reason = f"no gross energy: {energy.unavailable_reason}"
    else:
        reason = "idle baseline disabled (idle_baseline.enabled: false)"
    return NetEnergy(per_gpu=energy.per_gpu, net_energy_j=None, unavailable_reason=reason, flags=[])


def _mig(context: MeasurementContext) -> list[str]:
    """``mig_parent_energy`` when a measured GPU is in MIG mode: NVML's counter is then the
    whole parent GPU's, not the slice's."""
    mig = any(g.mig_mode_enabled for g in context.environment.gpus if g.uuid in context.gpu_uuids)
    return ["mig_parent_energy"] if mig else []


def _phase_fields(
    energy_j: float | None,
    stats: GenerationStats,
    prefill_window: EnergyWindow | None,
    counter_period_s: float | None,
) -> dict[str, Any]:
    """Prefill/decode fields of a Measurement (see ``lem.workers.workload.phases``)."""
    prefill_j, untrusted = None, None
    if prefill_window is not None:
        window = prefill_window.result()
        duration_s = stats.prefill_duration_s or window.window_duration_s  # as stored
        prefill_j, untrusted = trusted_prefill_energy(window.energy_j, duration_s, counter_period_s)
    split = split_phases(
        energy_j, stats.repetitions, prefill_j, stats.prefill_repetitions,
        stats.input_tokens, stats.output_tokens, stats.num_prompts,
    )  # fmt: skip
    reason = untrusted if untrusted is not None and stats.prefill_repetitions else split.reason
    return {
        "prefill_energy_j": split.prefill_energy_j,
        "prefill_duration_s": stats.prefill_duration_s,
        "prefill_repetitions": stats.prefill_repetitions,
        "prefill_energy_per_input_token_j": split.prefill_energy_per_input_token_j,
        "decode_energy_j": split.decode_energy_j,
        "decode_energy_per_output_token_j": split.decode_energy_per_output_token_j,
        "phase_split_unavailable_reason": reason,
    }
