"""What a campaign report shows, read from the results store: the campaign, its experiments'
effective configs with provenance and the axes they sweep, every stored cycle's payload
(flags, telemetry), the environments the measurements ran in, and the request latencies.

Per-experiment aggregates (mean J/token with its CI, CV, throughput, ...) are
``results_table.experiment_rows``'s; see ``rows.py``. Nothing here needs matplotlib.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lem.coordinator.planning.provenance import dotted_leaves
from lem.coordinator.results.table import open_for_reading, resolve_campaign_ids
from lem.coordinator.store.results_store import Store, StoreError
from lem.coordinator.store.schema import CampaignSummary
from lem.protocol.errors import BadInput
from lem.protocol.results import Measurement

# Config fields that differ between experiments without being an axis of the sweep.
NOT_AXES = frozenset({"name"})
# Values kept per experiment for a latency distribution (ITLs can number millions).
MAX_LATENCY_VALUES = 50_000


@dataclass(frozen=True)
class ExperimentInfo:
    """One experiment: its effective config (dotted leaves) and each field's source."""

    id: str
    position: int
    name: str | None
    config: dict[str, Any]
    provenance: dict[str, str] | None  # None: stored before provenance was recorded


@dataclass(frozen=True)
class CycleInfo:
    """One stored cycle of an experiment (``measurement`` None for a failed one)."""

    experiment_id: str
    position: int
    cycle: int
    status: str
    failure_reason: str | None
    measurement: Measurement | None


@dataclass(frozen=True)
class LatencySamples:
    """One experiment's request latencies over its ok cycles (ms), thinned evenly to at
    most ``MAX_LATENCY_VALUES`` each; ``*_total`` counts them before thinning."""

    experiment_id: str
    ttft_ms: list[float]
    itl_ms: list[float]
    ttft_total: int
    itl_total: int


@dataclass(frozen=True)
class CampaignData:
    """Everything a report is made from, except the per-experiment aggregates."""

    store_path: str
    schema_version: int
    campaign: CampaignSummary
    source_text: str | None
    coordinator_host: str | None
    experiments: list[ExperimentInfo]
    axes: list[str]
    cycles: list[CycleInfo]
    environments: list[dict[str, Any]]  # distinct Environment payloads, as stored
    latency: list[LatencySamples] = field(default_factory=list)

    def experiment(self, experiment_id: str) -> ExperimentInfo:
        return next(e for e in self.experiments if e.id == experiment_id)


class ReportDataError(BadInput):
    """The store cannot give a report (unknown campaign, unreadable file)."""


def swept_axes(experiments: list[ExperimentInfo]) -> list[str]:
    """Config fields (dotted) whose value differs between experiments: the sweep's axes.

    Fields a grid or zip set come first (in provenance order), then the rest by name.
    """
    if len(experiments) < 2:
        return []
    keys = sorted({k for e in experiments for k in e.config} - NOT_AXES)
    varying = [
        k
        for k in keys
        if len({json.dumps(e.config.get(k), sort_keys=True) for e in experiments}) > 1
    ]

    def swept_by_axis(key: str) -> bool:
        return any(
            (e.provenance or {}).get(key, "").split(".")[0] in ("grid", "zip", "backends")
            for e in experiments
        )

    return sorted(varying, key=lambda k: (not swept_by_axis(k), k))


def _thin(values: list[float], limit: int) -> list[float]:
    """At most ``limit`` values, taken evenly (every k-th) so the distribution keeps its shape."""
    if len(values) <= limit:
        return values
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def _latency(conn: sqlite3.Connection, experiment_id: str) -> LatencySamples | None:
    """TTFT and inter-token latencies of every request of an experiment's ok cycles."""
    rows = conn.execute(
        "SELECT r.ttft_ms, r.itl_ms_f32le FROM request_latencies r"
        " JOIN measurements m ON m.id = r.measurement_id"
        " WHERE m.experiment_id = ? AND m.status = 'ok' ORDER BY m.cycle, r.request_index",
        (experiment_id,),
    ).fetchall()
    if not rows:
        return None
    ttft_ms = [float(r[0]) for r in rows]
    itl_ms: list[float] = []
    for _, blob in rows:
        itl_ms.extend(struct.unpack(f"<{len(blob) // 4}f", blob))
    return LatencySamples(
        experiment_id=experiment_id,
        ttft_ms=_thin(ttft_ms, MAX_LATENCY_VALUES),
        itl_ms=_thin(itl_ms, MAX_LATENCY_VALUES),
        ttft_total=len(ttft_ms),
        itl_total=len(itl_ms),
    )


def _experiment(row: sqlite3.Row) -> ExperimentInfo:
    provenance = row["provenance_json"]
    return ExperimentInfo(
        id=row["id"],
        position=row["position"],
        name=row["name"],
        config=dotted_leaves(json.loads(row["config_json"])),
        provenance=None if provenance is None else json.loads(provenance),
    )


def read_campaign(store_path: str | Path, campaign_id: str) -> CampaignData:
    """Read one campaign (its id or a unique prefix of it) for a report;
    ``ReportDataError`` when the store is missing or unreadable or has no such campaign."""
    try:
        conn, schema_version = open_for_reading(store_path)
        try:
            [full_id] = resolve_campaign_ids(conn, [campaign_id])
            with Store.read_only(store_path) as store:
                detail = store.campaign_detail(full_id)
                cycles = [
                    CycleInfo(
                        r.experiment_id,
                        e.position,
                        r.cycle,
                        r.status,
                        r.failure_reason,
                        r.measurement,
                    )
                    for e in detail.experiments
                    for r in store.experiment_measurements(e.id)
                ]
            return _read_rest(conn, str(store_path), schema_version, detail.campaign, cycles)
        finally:
            conn.close()
    except (StoreError, sqlite3.Error) as exc:
        raise ReportDataError(str(exc)) from exc


def _read_rest(
    conn: sqlite3.Connection,
    path: str,
    schema_version: int,
    campaign: CampaignSummary,
    cycles: list[CycleInfo],
) -> CampaignData:
    facts = conn.execute(
        "SELECT source_text, coordinator_host FROM campaigns WHERE id = ?", (campaign.id,)
    ).fetchone()
    experiments = [
        _experiment(r)
        for r in conn.execute(
            "SELECT id, position, name, config_json, provenance_json FROM experiments"
            " WHERE campaign_id = ? ORDER BY position",
            (campaign.id,),
        )
    ]
    environments = [
        json.loads(r[0])
        for r in conn.execute(
            "SELECT DISTINCT v.payload_json FROM measurements m"
            " JOIN experiments e ON e.id = m.experiment_id"
            " JOIN environments v ON v.id = m.environment_id"
            " WHERE e.campaign_id = ? ORDER BY v.id",
            (campaign.id,),
        )
    ]
    latency = [s for e in experiments if (s := _latency(conn, e.id)) is not None]
    return CampaignData(
        store_path=path,
        schema_version=schema_version,
        campaign=campaign,
        source_text=facts["source_text"],
        coordinator_host=facts["coordinator_host"],
        experiments=experiments,
        axes=swept_axes(experiments),
        cycles=cycles,
        environments=environments,
        latency=latency,
    )
