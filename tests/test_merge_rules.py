"""Every field of a Measurement and of each of its sub-records has exactly one merge rule
for data-parallel shards, and every derived field is computed by ``shard_merge``; a field
added without a rule fails here (see the last tests)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from lem.coordinator.execution.shard_merge import DERIVED, ShardMismatch, merge_shards
from lem.protocol.latency import Goodput
from lem.protocol.result_payload import FLAT_FIELDS, replace_fields
from lem.protocol.results import SUB_RECORDS, Environment, Measurement, Merge, Work
from tests.test_data_parallel import shard
from tests.test_store_latency import with_latency


def merged_records() -> list[type[msgspec.Struct]]:
    """Measurement and every record it merges field by field (``Merge.FIELDS``), walked
    from its fields' types."""
    found: list[type[msgspec.Struct]] = []
    todo: list[type[msgspec.Struct]] = [Measurement]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        for f in msgspec.structs.fields(cls):
            record = isinstance(f.type, type) and issubclass(f.type, msgspec.Struct)
            if record and hasattr(f.type, "MERGE") and f.type not in found + todo:
                todo.append(f.type)
    return found


def rule_problems(cls: type[msgspec.Struct]) -> list[str]:
    """What is wrong with the merge rules of ``cls``: a field without a rule, a rule for no
    field, a sub-record not merged by its fields, a derived field ``shard_merge`` does not
    compute, a computation for a field that is not derived."""
    rules: dict[str, Merge] = getattr(cls, "MERGE", {})
    fields = {f.name: f.type for f in msgspec.structs.fields(cls)}
    name = cls.__name__
    problems = [f"{name}.{f} has no merge rule" for f in fields if f not in rules]
    problems += [f"{name}.{f}: a rule for no field" for f in rules if f not in fields]
    for field, kind in fields.items():
        record = isinstance(kind, type) and hasattr(kind, "MERGE")
        if record != (rules.get(field) is Merge.FIELDS):
            problems.append(f"{name}.{field}: Merge.FIELDS is for a sub-record and only for one")
    derived = {f for f, rule in rules.items() if rule is Merge.DERIVED}
    # (a test's subclass, standing for an edited record, has its base's computations)
    computed = set(next((DERIVED[c] for c in cls.__mro__ if c in DERIVED), {}))
    problems += [f"{name}.{f}: derived, not computed by shard_merge" for f in derived - computed]
    problems += [f"{name}.{f}: computed by shard_merge, not derived" for f in computed - derived]
    return problems


def test_every_field_of_every_record_has_one_merge_rule() -> None:
    records = merged_records()
    assert set(records) == {Measurement, Environment, *SUB_RECORDS.values()}
    assert [p for cls in records for p in rule_problems(cls)] == []
    assert set(DERIVED) <= set(records)
    fields = sum(len(cls.__struct_fields__) for cls in records)
    assert fields == 87 + len(SUB_RECORDS) + len(Environment.__struct_fields__)


def test_no_two_sub_records_share_a_field_name() -> None:
    """So that the flat view (export columns, payloads of schema ≤ 4) maps one-to-one."""
    own = [f for f in Measurement.__struct_fields__ if f not in SUB_RECORDS]
    names = own + [f for cls in SUB_RECORDS.values() for f in cls.__struct_fields__]
    assert len(names) == len(set(names)) == len(FLAT_FIELDS)


class WorkWithANewField(Work, frozen=True, kw_only=True):
    """``Work`` as it would be with a field added and no rule given for it."""

    new_quantity_j: float | None = None


class WorkWithAnUncomputedField(Work, frozen=True, kw_only=True):
    new_ratio: float | None = None
    MERGE = {**Work.MERGE, "new_ratio": Merge.DERIVED}


def test_a_field_added_without_a_rule_fails() -> None:
    problems = rule_problems(WorkWithANewField)
    assert problems == ["WorkWithANewField.new_quantity_j has no merge rule"]
    problems = rule_problems(WorkWithAnUncomputedField)
    assert problems == ["WorkWithAnUncomputedField.new_ratio: derived, not computed by shard_merge"]


def test_measurement_fields_outside_a_sub_record_need_a_rule_too() -> None:
    class Grown(Measurement, frozen=True, kw_only=True):
        new_flag_count: int = 0

    assert rule_problems(Grown) == ["Grown.new_flag_count has no merge rule"]


# ---- rules that are not in tests/test_data_parallel.py ---------------------------------


def test_a_config_field_must_be_equal_on_every_shard() -> None:
    odd = replace_fields(shard(1, 100.0, 10.0, 500.0), workload_mode="server")
    with pytest.raises(ShardMismatch, match=r"Work\.workload_mode"):
        merge_shards([shard(0, 100.0, 10.0, 400.0), odd])
    other_device = replace_fields(shard(1, 100.0, 10.0, 500.0), device="cpu")
    with pytest.raises(ShardMismatch, match=r"Measurement\.device"):
        merge_shards([shard(0, 100.0, 10.0, 400.0), other_device])


def test_a_merged_measurement_is_a_whole_one_with_each_shard_gpu_once() -> None:
    merged = merge_shards([shard(0, 100.0, 10.0, 400.0), shard(1, 100.0, 10.0, 500.0)])
    assert (merged.shard_index, merged.shard_count, merged.shard_group) == (0, 1, "")
    assert merged.store_schema_version is None  # the store stamps it
    assert merged.preparation.warmup_batches == 2 and merged.work.repetitions == 1


def loaded(index: int, load_energy_j: float | None, reason: str | None = None) -> Measurement:
    part = shard(index, 100.0, 10.0, 400.0)
    preparation = msgspec.structs.replace(
        part.preparation, load_energy_j=load_energy_j, load_energy_unavailable_reason=reason
    )
    return msgspec.structs.replace(part, preparation=preparation)


def test_each_shards_load_energy_adds_up_and_a_missing_one_is_null_with_its_reason() -> None:
    merged = merge_shards([loaded(0, 300.0), loaded(1, 350.0)]).preparation
    assert merged.load_energy_j == pytest.approx(650.0)
    assert merged.load_energy_unavailable_reason is None
    why = "NVML: GPU is lost"
    merged = merge_shards([loaded(0, 300.0), loaded(1, None, why)]).preparation
    assert merged.load_energy_j is None and merged.load_energy_unavailable_reason == why


def timed(index: int, start_s: float, energy_j: float) -> Measurement:
    """A shard with the requests, summaries and goodput of ``with_latency``."""
    latency = with_latency("e1", 0, count=10 + index).latency
    return msgspec.structs.replace(shard(index, start_s, 10.0, energy_j), latency=latency)


def test_latency_is_summarised_again_over_every_shards_requests() -> None:
    parts = [timed(0, 100.0, 400.0), timed(1, 100.0, 500.0)]
    merged = merge_shards(parts).latency
    assert len(merged.requests) == 21 and merged.ttft_ms is not None
    assert merged.ttft_ms.count == 21 and merged.latency_unavailable_reason is None
    goodput = merged.goodput
    assert isinstance(goodput, Goodput) and goodput.requests == 21


def test_no_shard_summary_outlives_a_shard_without_requests() -> None:
    """Before the sub-records, summaries and goodput kept shard 0's values here."""
    lone = merge_shards([timed(0, 100.0, 400.0), shard(1, 100.0, 10.0, 500.0)]).latency
    assert lone.requests == [] and lone.latency_unavailable_reason is not None
    summaries: list[Any] = [lone.ttft_ms, lone.itl_ms, lone.tpot_ms, lone.e2e_ms, lone.queue_ms]
    assert summaries == [None] * 5 and lone.goodput is None
