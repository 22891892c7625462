"""Result stores built from real ``Measurement`` structs through ``Store.record_measurement``,
with chosen J/token per cycle (the figures tests of tables, export and compare check)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from lem.coordinator.store.results_store import Store, new_id
from lem.protocol.config import ExperimentConfig, ModelConfig, load_key
from lem.protocol.latency import LatencySummary
from lem.protocol.result_payload import replace_fields
from lem.protocol.results import EngineLock
from tests.test_store import measurement

OUTPUT_TOKENS = 256  # per window in tests.test_store.measurement


def config(batch_size: int, name: str | None = None) -> ExperimentConfig:
    return ExperimentConfig(
        name=name or f"b{batch_size}",
        batch_size=batch_size,
        model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16"),
    )


def latency(p50_ms: float) -> LatencySummary:
    return LatencySummary(
        count=8, mean_ms=p50_ms, p50_ms=p50_ms, p90_ms=p50_ms * 1.5, p95_ms=p50_ms * 1.7,
        p99_ms=p50_ms * 2, min_ms=p50_ms / 2, max_ms=p50_ms * 3,
    )  # fmt: skip


def add_campaign(
    store: Store,
    name: str,
    configs: Sequence[ExperimentConfig],
    j_per_token: Sequence[Sequence[float | None]],
    *,
    tok_per_s: float = 100.0,
    failed_cycles: Sequence[tuple[int, int]] = (),
    engine_lock: EngineLock | None = None,
) -> tuple[str, list[str]]:
    """A campaign whose experiment ``i`` stores cycle ``k`` with gross J/token
    ``j_per_token[i][k]`` (None: no energy, with the NVML reason), TTFT p50 10 ms per
    cycle; (experiment, cycle) pairs in ``failed_cycles`` are stored as failures; every
    result's environment names ``engine_lock`` when given."""
    experiments = [(new_id("e"), cfg, load_key(cfg)) for cfg in configs]
    cycles = max(len(v) for v in j_per_token)
    campaign_id = store.create_campaign(name, f"{name}.yaml", "hash", cycles, experiments)
    for (experiment_id, _, _), values in zip(experiments, j_per_token, strict=True):
        for cycle, j in enumerate(values):
            m = measurement(
                experiment_id,
                cycle,
                tok_per_s=tok_per_s,
                energy_j=None if j is None else j * OUTPUT_TOKENS,
            )
            m = replace_fields(m, ttft_ms=latency(10.0), flags=["short_window"])
            if engine_lock is not None:
                environment = msgspec.structs.replace(m.environment, engine_lock=engine_lock)
                m = msgspec.structs.replace(m, environment=environment)
            store.record_measurement(m, attempts=1)
    for index, cycle in failed_cycles:
        store.record_failure(experiments[index][0], cycle, "worker died (exit 137)", "w-1", 2)
    return campaign_id, [e[0] for e in experiments]
