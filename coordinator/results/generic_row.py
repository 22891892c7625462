"""One result row read as plain JSON: any payload, flat (schema ≤ 4) or nested, any types.

This is how a row was always made, cell by cell: the payload decoded to builtins, flattened
(``lem.protocol.result_payload.flat_payload``), merged with the measurement's columns and
its experiment's setup, every cell coerced to its column's kind. ``typed_row`` makes the
same rows faster from typed decoding and falls back to this for any payload it cannot read
exactly so (an old flat payload, a field of an unexpected type).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from lem.coordinator.results.columns import (
    CONFIG_KINDS,
    KINDS,
    LATENCY_METRICS,
    LATENCY_PERCENTILES,
    MEASUREMENT_COLUMNS,
    coerce,
)
from lem.protocol.result_payload import flat_payload

Row = dict[str, Any]


def lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a decoded config (None where the path breaks off)."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def joined(values: Iterable[Any]) -> str | None:
    """``a;b`` of the values in order, None when there are none."""
    text = [str(v) for v in values]
    return ";".join(text) if text else None


def distinct(values: Iterable[Any]) -> str | None:
    return joined(sorted({str(v) for v in values if v is not None}))


def setup(experiment: Mapping[str, Any]) -> Row:
    """Identity, key setup fields and every ``config.*`` leaf of one experiment."""
    config: dict[str, Any] = msgspec.json.decode(experiment["config_json"])
    model = config.get("model") or {}
    return {
        "campaign_id": experiment["campaign_id"],
        "campaign_name": experiment["campaign_name"],
        "experiment_id": experiment["experiment_id"],
        "experiment_name": experiment["experiment_name"],
        "experiment_position": experiment["experiment_position"],
        "model": model.get("name") or model.get("path"),
        "model_source": model.get("source"),
        "dtype": model.get("dtype"),
        "backend": config.get("backend"),
        "batch_size": config.get("batch_size"),
        "workload_mode": lookup(config, "workload.mode") or "offline",
        **{f"config.{leaf}": lookup(config, leaf) for leaf in CONFIG_KINDS},
    }


def environment(payload: Mapping[str, Any]) -> Row:
    env = payload.get("environment")
    if not env:
        return {}
    gpus = env.get("gpus") or []
    limits = [g.get("power_limit_w") for g in gpus]
    packages = env.get("packages") or {}
    lock = env.get("engine_lock") or {}
    return {
        "engine_lock": lock.get("name"),
        "engine_lock_sha256": lock.get("sha256"),
        "engine_lock_matches": lock.get("matches"),
        **{k: env.get(k) for k in ("driver_version", "cuda_version", "backend_version")},
        **{k: env.get(k) for k in ("python_version", "lem_version", "hostname")},
        "gpu_count": len(gpus),
        "gpu_names": joined(g.get("name") for g in gpus),
        "gpu_uuids": joined(g.get("uuid") for g in gpus),
        "gpu_power_limits_w": joined("null" if w is None else f"{w:g}" for w in limits),
        "packages": joined(f"{k}={v}" for k, v in sorted(packages.items())),
    }


def energy_details(payload: Mapping[str, Any]) -> Row:
    per_gpu = payload.get("gpu_energy") or []
    idle = [g.get("idle_power_w") for g in per_gpu]
    return {
        "energy_method": distinct(g.get("method") for g in per_gpu),
        "idle_power_w": sum(idle) if idle and None not in idle else None,
    }


def latency(payload: Mapping[str, Any]) -> Row:
    row: Row = {}
    for metric in LATENCY_METRICS:
        summary = payload.get(f"{metric}_ms") or {}
        for p in LATENCY_PERCENTILES:
            row[f"{metric}_{p}_ms"] = summary.get(f"{p}_ms")
    row["goodput_share"] = (payload.get("goodput") or {}).get("good_share")
    return row


def measurement_row(experiment: Mapping[str, Any], m: Mapping[str, Any]) -> Row:
    """The row of measurement ``m`` (its ``measurements`` columns and ``payload_json``) of
    ``experiment`` (identity, ``config_json`` and the ``schema_version`` it is read at)."""
    payload: dict[str, Any] = (
        flat_payload(msgspec.json.decode(m["payload_json"])) if m["payload_json"] else {}
    )
    row: Row = {
        **payload,  # Measurement fields named as their columns (unknown keys are dropped)
        **{k: m[k] for k in ("cycle", "status", "failure_reason", "attempts", "worker_id")},
        "recorded_at_unix_s": m["recorded_at_unix_s"],
        "schema_version": experiment["schema_version"],
        "flags": joined(payload.get("flags") or []),
        **energy_details(payload),
        **latency(payload),
        **environment(payload),
        **setup(experiment),
    }
    return {name: coerce(KINDS[name], row.get(name)) for name in MEASUREMENT_COLUMNS}
