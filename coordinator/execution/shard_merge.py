"""Merging the shards of a data-parallel measurement into one measurement.

Each GPU worker measured its own part — its prompts, in its own window, with its own
GPU's energy counter — and the windows opened together at a start barrier. The merged
measurement counts every GPU exactly once (its worker's counter difference; no worker
reads another's GPU), adds tokens and prompts, and spans the windows' union: from the
first window's opening to the last one's end, so that its throughput (all output tokens
over that span) is what the GPUs delivered together, never more. Host-wide figures that
every worker read over nearly the same span (RAPL CPU and DRAM energy) are not added:
the merged figure is the largest shard's reading, flagged ``host_energy_overlap``.

Every field of every record is merged by the rule its record declares (``MERGE`` in
``lem.protocol.results``); a ``Merge.DERIVED`` field is computed here, in ``DERIVED``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

import msgspec

from lem.protocol.errors import LemError
from lem.protocol.latency import Goodput, RequestRecord
from lem.protocol.latency_stats import from_float32_le, summaries
from lem.protocol.results import (
    Energy,
    Environment,
    GpuInfo,
    Latency,
    Measurement,
    Merge,
    Observed,
    Phases,
    Rules,
    ShardRecord,
    Steady,
    Work,
)
from lem.protocol.telemetry import TelemetryWindow

T = TypeVar("T")
Record = TypeVar("Record", bound=msgspec.Struct)


class ShardMismatch(LemError, ValueError):
    """The measurements given are not the complete shards of one experiment cycle."""


def _sum(values: Sequence[Any]) -> Any:
    """The sum, or None when any part is missing (a partial sum would understate)."""
    return None if any(v is None for v in values) else sum(values)


def _first(values: Sequence[T | None]) -> T | None:
    return next((v for v in values if v is not None), None)


def _max(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _min(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _all_or_none(values: Sequence[bool | None]) -> bool | None:
    return None if any(v is None for v in values) else all(values)


def _per(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


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
    if any(m.window_started_at_unix_s is None for m in parts):
        raise ShardMismatch("a shard has no window start time: cannot align the windows")
    return _merge_record(Measurement, parts, _Pool(parts))


def _merge_record(cls: type[Record], records: Sequence[Record], pool: _Pool) -> Record:
    """One ``cls`` of the shards' ``records``, every field by its rule in ``cls.MERGE``."""
    rules: Rules = getattr(cls, "MERGE")  # noqa: B009 (any record's ClassVar)
    defaults = {f.name: f for f in msgspec.structs.fields(cls)}
    values: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        rule = rules.get(name)
        if rule is None:  # tests/test_merge_rules.py fails first
            raise TypeError(f"{cls.__name__}.{name} has no merge rule (lem.protocol.results)")
        column = [getattr(r, name) for r in records]
        if rule is Merge.FIELDS:
            values[name] = _merge_record(type(column[0]), column, pool)
        elif rule is Merge.DERIVED:
            values[name] = DERIVED[cls][name](pool)
        elif rule is Merge.WHOLE:
            field = defaults[name]
            has_factory = field.default_factory is not msgspec.NODEFAULT
            values[name] = field.default_factory() if has_factory else field.default
        elif rule is Merge.SAME:
            if any(v != column[0] for v in column):
                raise ShardMismatch(f"shards differ in {cls.__name__}.{name}: {column}")
            values[name] = column[0]
        else:
            values[name] = _RULES[rule](column)
    return cls(**values)


_RULES: dict[Merge, Callable[[list[Any]], Any]] = {
    Merge.FIRST: lambda column: column[0],
    Merge.FIRST_PRESENT: _first,
    Merge.SUM: _sum,
    Merge.MAX: _max,
    Merge.MIN: _min,
    Merge.ALL: _all_or_none,
    Merge.CONCAT: lambda column: [item for items in column for item in items],
    Merge.UNION: lambda column: {k: v for mapping in column for k, v in mapping.items()},
}


class _Pool:
    """The shards taken together: what derived fields are computed from."""

    def __init__(self, parts: list[Measurement]) -> None:
        self.parts = parts
        starts_s = [m.window_started_at_unix_s or 0.0 for m in parts]
        self.begin_s = min(starts_s)
        end_s = max(s + m.work.duration_s for s, m in zip(starts_s, parts, strict=True))
        self.duration_s = end_s - self.begin_s
        self.output_tokens: int = sum(m.work.output_tokens for m in parts)
        self.num_prompts: int = sum(m.work.num_prompts for m in parts)
        self.energy_j: float | None = _sum([m.energy.energy_j for m in parts])
        self.net_energy_j: float | None = _sum([m.energy.net_energy_j for m in parts])

    @cached_property
    def phases(self) -> dict[str, Any]:
        return _merged_phases(self.parts)

    @cached_property
    def latency(self) -> dict[str, Any]:
        return _merged_latency(self.parts, self.begin_s, self.duration_s)


def _flags(pool: _Pool) -> list[str]:
    flags = {f for m in pool.parts for f in m.flags}
    host = [m.host_energy for m in pool.parts]
    if any(h.cpu_energy_j is not None or h.dram_energy_j is not None for h in host):
        flags.add("host_energy_overlap")
    return sorted(flags)


def _joined_hash(hashes: Sequence[str | None]) -> str | None:
    if any(h is None for h in hashes):
        return None
    return hashlib.sha256("+".join(h for h in hashes if h).encode()).hexdigest()


def _prompt_source(pool: _Pool) -> str | None:
    first = pool.parts[0].work.prompt_source
    if not first:
        return None
    return f"{first}; data parallel: {len(pool.parts)} contiguous shards"


def _shard_record(m: Measurement) -> ShardRecord:
    return ShardRecord(
        shard_index=m.shard_index,
        worker_id=m.worker_id,
        gpu_uuids=[g.gpu_uuid for g in m.energy.gpu_energy],
        window_started_at_unix_s=m.window_started_at_unix_s,
        duration_s=m.work.duration_s,
        num_prompts=m.work.num_prompts,
        output_tokens=m.work.output_tokens,
        output_tokens_per_s=m.work.output_tokens_per_s,
        energy_j=m.energy.energy_j,
    )


def _gpus(pool: _Pool) -> list[GpuInfo]:
    """Every shard's GPUs, each once (by UUID), in shard order."""
    seen: set[str] = set()
    gpus = []
    for m in pool.parts:
        for gpu in m.environment.gpus:
            if gpu.uuid not in seen:
                seen.add(gpu.uuid)
                gpus.append(gpu)
    return gpus


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


def _merged_phases(parts: Sequence[Measurement]) -> dict[str, Any]:
    """Prefill/decode split: sums of energy; per-token figures from the summed energy over
    the summed tokens each shard's figure implies. None (with the first reason) when any
    shard lacks the split."""
    phases = [m.phases for m in parts]
    prefill = [p.prefill_energy_j for p in phases]
    decode = [p.decode_energy_j for p in phases]
    if any(v is None for v in prefill + decode):
        return {
            "prefill_energy_j": None,
            "decode_energy_j": None,
            "prefill_energy_per_input_token_j": None,
            "decode_energy_per_output_token_j": None,
            "phase_split_unavailable_reason": _first(
                [p.phase_split_unavailable_reason for p in phases]
            )
            or "a shard has no prefill/decode split",
        }
    return {
        "prefill_energy_j": _sum(prefill),
        "decode_energy_j": _sum(decode),
        "prefill_energy_per_input_token_j": _pooled(
            [(p.prefill_energy_j, p.prefill_energy_per_input_token_j) for p in phases]
        ),
        "decode_energy_per_output_token_j": _pooled(
            [(p.decode_energy_j, p.decode_energy_per_output_token_j) for p in phases]
        ),
        "phase_split_unavailable_reason": None,
    }


def _pooled(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    """Σ energy / Σ (energy / per-token energy): the per-token energy of all shards."""
    energy_j = 0.0
    tokens = 0.0
    for part_j, per_token_j in pairs:
        if part_j is None or not per_token_j:
            return None
        energy_j += part_j
        tokens += part_j / per_token_j
    return _per(energy_j, tokens)


def _merged_latency(
    parts: Sequence[Measurement], begin_s: float, duration_s: float
) -> dict[str, Any]:
    """Every shard's requests, times shifted to the merged window's start, re-summarised;
    nothing (with the first reason) when any shard recorded no request."""
    if any(not m.latency.requests for m in parts):
        return {
            "requests": [],
            **dict.fromkeys(("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "queue_ms")),
            "goodput": None,
            "latency_unavailable_reason": _first(
                [m.latency.latency_unavailable_reason for m in parts]
            )
            or "a shard recorded no request",
        }
    records: list[RequestRecord] = []
    itls_ms: list[float] = []
    for m in parts:
        shift_ms = ((m.window_started_at_unix_s or begin_s) - begin_s) * 1000.0
        for r in m.latency.requests:
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
        "goodput": _merged_goodput([m.latency.goodput for m in parts], duration_s),
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


def _latency_field(name: str) -> Callable[[_Pool], Any]:
    return lambda pool: pool.latency[name]


def _phase_field(name: str) -> Callable[[_Pool], Any]:
    return lambda pool: pool.phases[name]


# How each ``Merge.DERIVED`` field is computed, by record and field.
DERIVED: dict[type, dict[str, Callable[[_Pool], Any]]] = {
    Measurement: {
        "worker_id": lambda pool: "+".join(m.worker_id for m in pool.parts),
        "flags": _flags,
        "shards": lambda pool: [_shard_record(m) for m in pool.parts],
    },
    Work: {
        "duration_s": lambda pool: pool.duration_s,
        "output_tokens_per_s": lambda pool: _per(pool.output_tokens, pool.duration_s) or 0.0,
        "prompt_set_hash": lambda pool: _joined_hash([m.work.prompt_set_hash for m in pool.parts]),
        "prompt_source": _prompt_source,
    },
    Energy: {
        "energy_per_output_token_j": lambda pool: _per(pool.energy_j, pool.output_tokens),
        "avg_power_w": lambda pool: _per(pool.energy_j, pool.duration_s),
        "net_energy_per_output_token_j": lambda pool: _per(pool.net_energy_j, pool.output_tokens),
        "energy_per_request_j": lambda pool: _per(pool.energy_j, pool.num_prompts),
        "output_tokens_per_j": lambda pool: _per(pool.output_tokens, pool.energy_j or 0.0),
    },
    Phases: {
        name: _phase_field(name)
        for name in (
            "prefill_energy_j",
            "prefill_energy_per_input_token_j",
            "decode_energy_j",
            "decode_energy_per_output_token_j",
            "phase_split_unavailable_reason",
        )
    },
    Latency: {name: _latency_field(name) for name in Latency.__struct_fields__},
    Observed: {
        "telemetry": lambda pool: _merged_telemetry([m.observed.telemetry for m in pool.parts]),
        "foreign_processes": lambda pool: (
            "; ".join(p for m in pool.parts if (p := m.observed.foreign_processes)) or None
        ),
    },
    Steady: {
        "steady_energy_per_output_token_j": lambda pool: _per(
            _sum([m.steady.steady_energy_j for m in pool.parts]),
            _sum([m.steady.steady_output_tokens for m in pool.parts]),
        )
    },
    Environment: {"gpus": _gpus},
}
