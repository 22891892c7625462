"""Merging the shards of a data-parallel measurement into one measurement.

Each GPU worker measured its own part — its prompts, in its own window, with its own
GPU's energy counter — and the windows opened together at a start barrier. The merged
measurement counts every GPU exactly once (its worker's counter difference; no worker
reads another's GPU), adds tokens and prompts, and spans the windows' union: from the
first window's opening to the last one's end, so that its throughput (all output tokens
over that span) is what the GPUs delivered together, never more. Host-wide figures that
every worker read over nearly the same span (RAPL CPU and DRAM energy) are not added:
the merged figure is the largest shard's reading, flagged ``host_energy_overlap``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from lem.protocol.errors import LemError
from lem.protocol.latency import Goodput, RequestRecord
from lem.protocol.latency_stats import from_float32_le, summaries
from lem.protocol.results import Environment, Measurement, ShardRecord
from lem.protocol.telemetry import TelemetryWindow

T = TypeVar("T")


class ShardMismatch(LemError, ValueError):
    """The measurements given are not the complete shards of one experiment cycle."""


def _sum(values: Sequence[float | None]) -> float | None:
    """The sum, or None when any part is missing (a partial sum would understate)."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _first(values: Sequence[T | None]) -> T | None:
    return next((v for v in values if v is not None), None)


def _per(numerator: float | None, denominator: float) -> float | None:
    return None if numerator is None or denominator <= 0 else numerator / denominator


def check_shards(shards: Sequence[Measurement]) -> list[Measurement]:
    """``shards`` in shard order; raises ShardMismatch unless they are exactly shards
    0 … n−1 of one attempt (``shard_group``) at one (experiment, cycle)."""
    if not shards:
        raise ShardMismatch("no shards to merge")
    ordered = sorted(shards, key=lambda m: m.shard_index)
    count = ordered[0].shard_count
    keys = {(m.experiment_id, m.cycle, m.shard_count, m.shard_group) for m in ordered}
    if len(keys) != 1 or [m.shard_index for m in ordered] != list(range(count)):
        found = sorted((m.experiment_id, m.cycle, m.shard_index, m.shard_count) for m in shards)
        raise ShardMismatch(f"not one complete set of shards: {found}")
    return ordered


def merge_shards(shards: Sequence[Measurement]) -> Measurement:
    """One measurement of shards 0 … n−1 of a data-parallel experiment cycle (energy J,
    times s; see the module docstring for what is added and what is not)."""
    parts = check_shards(shards)
    first = parts[0]
    starts_s = [m.window_started_at_unix_s for m in parts]
    if any(s is None for s in starts_s):
        raise ShardMismatch("a shard has no window start time: cannot align the windows")
    begin_s = min(s for s in starts_s if s is not None)
    end_s = max((m.window_started_at_unix_s or 0.0) + m.duration_s for m in parts)
    duration_s = end_s - begin_s
    output_tokens = sum(m.output_tokens for m in parts)
    num_prompts = sum(m.num_prompts for m in parts)
    energy_j = _sum([m.energy_j for m in parts])
    net_j = _sum([m.net_energy_j for m in parts])
    flags = {f for m in parts for f in m.flags}
    if any(m.cpu_energy_j is not None or m.dram_energy_j is not None for m in parts):
        flags.add("host_energy_overlap")
    latency = _merged_latency(parts, begin_s, duration_s)
    return msgspec.structs.replace(
        first,
        worker_id="+".join(m.worker_id for m in parts),
        started_at_unix_s=min(m.started_at_unix_s for m in parts),
        duration_s=duration_s,
        num_prompts=num_prompts,
        batches=sum(m.batches for m in parts),
        warmup_batches=sum(m.warmup_batches for m in parts),
        input_tokens=sum(m.input_tokens for m in parts),
        output_tokens=output_tokens,
        output_tokens_per_s=_per(output_tokens, duration_s) or 0.0,
        energy_j=energy_j,
        energy_unavailable_reason=_first([m.energy_unavailable_reason for m in parts]),
        energy_per_output_token_j=_per(energy_j, output_tokens),
        avg_power_w=_per(energy_j, duration_s),
        gpu_energy=[g for m in parts for g in m.gpu_energy],
        peak_gpu_memory_load_mib=_max([m.peak_gpu_memory_load_mib for m in parts]),
        peak_gpu_memory_inference_mib=_max([m.peak_gpu_memory_inference_mib for m in parts]),
        model_load_s=max(m.model_load_s for m in parts),
        model_reused=all(m.model_reused for m in parts),
        model_load_count=max(m.model_load_count for m in parts),
        environment=_merged_environment([m.environment for m in parts]),
        energy_counter_period_s=_max([m.energy_counter_period_s for m in parts]),
        energy_bound_j=_sum([m.energy_bound_j for m in parts]),
        flags=sorted(flags),
        net_energy_j=net_j,
        net_energy_per_output_token_j=_per(net_j, output_tokens),
        net_energy_unavailable_reason=_first([m.net_energy_unavailable_reason for m in parts]),
        energy_per_request_j=_per(energy_j, num_prompts),
        output_tokens_per_j=_per(output_tokens, energy_j or 0.0),
        idle_baselines=[b for m in parts for b in m.idle_baselines],
        foreign_processes="; ".join(m.foreign_processes for m in parts if m.foreign_processes)
        or None,
        cpu_energy_j=_max([m.cpu_energy_j for m in parts]),
        dram_energy_j=_max([m.dram_energy_j for m in parts]),
        **_merged_phases(parts),
        warmup_s=max(m.warmup_s for m in parts),
        warmup_converged=_all_or_none([m.warmup_converged for m in parts]),
        warmup_final_cv=_max([m.warmup_final_cv for m in parts]),
        cooldown_s=max(m.cooldown_s for m in parts),
        start_temperature_c={k: v for m in parts for k, v in m.start_temperature_c.items()},
        telemetry=_merged_telemetry([m.telemetry for m in parts]),
        telemetry_unavailable_reason=_first([m.telemetry_unavailable_reason for m in parts]),
        carbon_g=_sum([m.carbon_g for m in parts]),
        carbon_unavailable_reason=_first([m.carbon_unavailable_reason for m in parts]),
        repetitions=min(m.repetitions for m in parts),
        prompt_set_hash=_joined_hash([m.prompt_set_hash for m in parts]),
        prompt_source=(
            f"{first.prompt_source}; data parallel: {len(parts)} contiguous shards"
            if first.prompt_source
            else None
        ),
        **latency,
        window_started_at_unix_s=begin_s,
        shard_index=0,
        shard_count=1,
        shard_group="",
        shards=[_shard_record(m) for m in parts],
    )


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _all_or_none(values: Sequence[bool | None]) -> bool | None:
    return None if any(v is None for v in values) else all(values)


def _joined_hash(hashes: Sequence[str | None]) -> str | None:
    if any(h is None for h in hashes):
        return None
    return hashlib.sha256("+".join(h for h in hashes if h).encode()).hexdigest()


def _shard_record(m: Measurement) -> ShardRecord:
    return ShardRecord(
        shard_index=m.shard_index,
        worker_id=m.worker_id,
        gpu_uuids=[g.gpu_uuid for g in m.gpu_energy],
        window_started_at_unix_s=m.window_started_at_unix_s,
        duration_s=m.duration_s,
        num_prompts=m.num_prompts,
        output_tokens=m.output_tokens,
        output_tokens_per_s=m.output_tokens_per_s,
        energy_j=m.energy_j,
    )


def _merged_environment(environments: Sequence[Environment]) -> Environment:
    """The first shard's environment with every shard's GPUs."""
    seen: set[str] = set()
    gpus = []
    for env in environments:
        for gpu in env.gpus:
            if gpu.uuid not in seen:
                seen.add(gpu.uuid)
                gpus.append(gpu)
    return msgspec.structs.replace(environments[0], gpus=gpus)


def _merged_telemetry(windows: Sequence[TelemetryWindow | None]) -> TelemetryWindow | None:
    """Every GPU's samples (each shard's own GPUs; one monotonic clock on one host)."""
    if any(w is None for w in windows):
        return None
    present = [w for w in windows if w is not None]
    begin_s = min(w.t_begin_monotonic_s for w in present)
    end_s = max(w.t_end_monotonic_s for w in present)
    return TelemetryWindow(
        t_begin_monotonic_s=begin_s,
        t_end_monotonic_s=end_s,
        duration_s=end_s - begin_s,
        per_gpu=[g for w in present for g in w.per_gpu],
    )


def _merged_phases(parts: Sequence[Measurement]) -> dict[str, object]:
    """Prefill/decode split: sums of energy; per-token figures from the summed energy over
    the summed tokens each shard's figure implies. None (with the first reason) when any
    shard lacks the split."""
    prefill = [m.prefill_energy_j for m in parts]
    decode = [m.decode_energy_j for m in parts]
    if any(v is None for v in prefill + decode):
        return {
            "prefill_energy_j": None,
            "decode_energy_j": None,
            "prefill_energy_per_input_token_j": None,
            "decode_energy_per_output_token_j": None,
            "prefill_duration_s": _max([m.prefill_duration_s for m in parts]),
            "prefill_repetitions": min(m.prefill_repetitions for m in parts),
            "phase_split_unavailable_reason": _first(
                [m.phase_split_unavailable_reason for m in parts]
            )
            or "a shard has no prefill/decode split",
        }
    return {
        "prefill_energy_j": _sum(prefill),
        "decode_energy_j": _sum(decode),
        "prefill_energy_per_input_token_j": _pooled(
            parts, lambda m: (m.prefill_energy_j, m.prefill_energy_per_input_token_j)
        ),
        "decode_energy_per_output_token_j": _pooled(
            parts, lambda m: (m.decode_energy_j, m.decode_energy_per_output_token_j)
        ),
        "prefill_duration_s": _max([m.prefill_duration_s for m in parts]),
        "prefill_repetitions": min(m.prefill_repetitions for m in parts),
        "phase_split_unavailable_reason": None,
    }


def _pooled(
    parts: Sequence[Measurement],
    pick: Callable[[Measurement], tuple[float | None, float | None]],
) -> float | None:
    """Σ energy / Σ (energy / per-token energy): the per-token energy of all shards."""
    energy_j = 0.0
    tokens = 0.0
    for m in parts:
        part_j, per_token_j = pick(m)
        if part_j is None or not per_token_j:
            return None
        energy_j += part_j
        tokens += part_j / per_token_j
    return _per(energy_j, tokens)


def _merged_latency(
    parts: Sequence[Measurement], begin_s: float, duration_s: float
) -> dict[str, object]:
    """Every shard's requests, times shifted to the merged window's start, re-summarised."""
    if any(not m.requests for m in parts):
        return {
            "requests": [],
            "latency_unavailable_reason": _first([m.latency_unavailable_reason for m in parts])
            or "a shard recorded no request",
        }
    records: list[RequestRecord] = []
    itls_ms: list[float] = []
    for m in parts:
        shift_ms = ((m.window_started_at_unix_s or begin_s) - begin_s) * 1000.0
        for r in m.requests:
            records.append(
                msgspec.structs.replace(
                    r,
                    index=len(records),
                    start_ms=r.start_ms + shift_ms,
                    scheduled_ms=None if r.scheduled_ms is None else r.scheduled_ms + shift_ms,
                )
            )
            itls_ms.extend(from_float32_le(r.itl_ms_f32le))

    return {
        "requests": records,
        **summaries(records, itls_ms),
        "goodput": _merged_goodput([m.goodput for m in parts], duration_s),
        "latency_unavailable_reason": None,
    }


def _merged_goodput(parts: Sequence[Goodput | None], duration_s: float) -> Goodput | None:
    if any(g is None for g in parts):
        return None
    present = [g for g in parts if g is not None]
    requests = sum(g.requests for g in present)
    good = sum(g.good_requests for g in present)
    good_tokens = sum(g.good_output_tokens for g in present)
    return Goodput(
        requests=requests,
        good_requests=good,
        good_share=good / requests if requests else None,
        good_output_tokens=good_tokens,
        good_output_tokens_per_s=good_tokens / duration_s if duration_s > 0 else 0.0,
        duration_s=duration_s,
        ttft_slo_ms=present[0].ttft_slo_ms,
        tpot_slo_ms=present[0].tpot_slo_ms,
    )
