"""What a campaign report shows, read from the results store: the campaign, its experiments'
effective configs with provenance and the axes they sweep, the per-experiment aggregates
(``rows.py``), the fields of every stored cycle the sections read (``cycles.py``), the
environments the measurements ran in, and, for the experiments shown one by one
(``sample.py``), the telemetry to draw and the request latencies.

Reads scale with the campaign: one query per table, payloads decoded only for the fields
used, and the heavy parts (whole measurements, latencies) only for what is drawn. Nothing
here needs matplotlib.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec

from lem.coordinator.report.cycles import CycleMeasurement, decode_cycle
from lem.coordinator.report.rows import ExperimentRow, columns_table, experiment_table
from lem.coordinator.report.sample import SAMPLE_ABOVE, Sample, choose_sample, resolve_named
from lem.coordinator.report.sweep import ExperimentInfo, Sweep, leaves
from lem.coordinator.results.table import open_for_reading, resolve_campaign_ids
from lem.coordinator.store.results_store import StoreError
from lem.coordinator.store.schema import CAMPAIGN_COLUMNS
from lem.protocol.errors import BadInput
from lem.protocol.result_payload import decode_measurement
from lem.protocol.results import Measurement

# Values kept per experiment for a latency distribution (ITLs can number millions); for a
# sampled campaign, fewer per curve and at most ``MAX_LATENCY_CURVES`` curves.
MAX_LATENCY_VALUES = 50_000
SAMPLED_LATENCY_VALUES = 2_000
MAX_LATENCY_CURVES = 12
# Small multiples of power and temperature: at most this many measurements are drawn.
MAX_TIMELINES = 24


@dataclass(frozen=True)
class CampaignHead:
    """The campaign's stored facts and how many of its cycles are ok and failed."""

    id: str
    name: str
    source_path: str | None
    source_hash: str | None
    created_at_unix_s: float
    status: str
    experiment_count: int
    cycles: int
    measurements_ok: int
    measurements_failed: int


@dataclass(frozen=True)
class CycleInfo:
    """One stored cycle of an experiment (``measurement`` None for a failed one)."""

    experiment_id: str
    position: int
    cycle: int
    status: str
    failure_reason: str | None
    measurement: CycleMeasurement | None


@dataclass(frozen=True)
class LatencySamples:
    """One experiment's request latencies over its ok cycles (ms), thinned evenly to at
    most ``limit`` each; ``*_total`` counts them before thinning."""

    experiment_id: str
    ttft_ms: list[float]
    itl_ms: list[float]
    ttft_total: int
    itl_total: int
    limit: int = MAX_LATENCY_VALUES


@dataclass(frozen=True)
class CampaignData:
    """Everything a report is made from."""

    store_path: str
    schema_version: int
    campaign: CampaignHead
    source_text: str | None
    coordinator_host: str | None
    experiments: list[ExperimentInfo]
    axes: list[str]
    cycles: list[CycleInfo]  # every stored cycle, in plan and cycle order
    environments: list[dict[str, Any]]  # distinct Environment payloads, as stored
    rows: list[ExperimentRow] = field(default_factory=list)
    sample: Sample | None = None  # None: every experiment is shown
    latency: list[LatencySamples] = field(default_factory=list)
    # Whole measurements of the cycles whose telemetry is drawn (at most MAX_TIMELINES),
    # and how many cycles of the shown experiments had telemetry samples in all.
    timelines: list[tuple[CycleInfo, Measurement]] = field(default_factory=list)
    with_telemetry: int = 0

    @cached_property
    def _by_id(self) -> dict[str, ExperimentInfo]:
        return {e.id: e for e in self.experiments}

    def experiment(self, experiment_id: str) -> ExperimentInfo:
        return self._by_id[experiment_id]

    def detailed(self) -> list[ExperimentInfo]:
        """The experiments the page details (its summary table's), in plan order."""
        if self.sample is None:
            return self.experiments
        return [self._by_id[i] for i in self.sample.table]


class ReportDataError(BadInput):
    """The store cannot give a report (unknown campaign, unreadable file)."""


def _thin(values: list[float], limit: int) -> list[float]:
    """At most ``limit`` values, taken evenly (every k-th) so the distribution keeps its shape."""
    if len(values) <= limit:
        return values
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def _latency(conn: sqlite3.Connection, experiment_id: str, limit: int) -> LatencySamples | None:
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
        ttft_ms=_thin(ttft_ms, limit),
        itl_ms=_thin(itl_ms, limit),
        ttft_total=len(ttft_ms),
        itl_total=len(itl_ms),
        limit=limit,
    )


def read_campaign(
    store_path: str | Path, campaign_id: str, named: Sequence[str] = ()
) -> CampaignData:
    """Read one campaign (its id or a unique prefix of it) for a report; ``named``: the
    experiments (ids, names or positions) to show whatever the sample. ``ReportDataError``
    when the store is missing or unreadable or has no such campaign; ``UnknownExperiment``
    for a name that matches none."""
    try:
        conn, schema_version = open_for_reading(store_path)
        try:
            [full_id] = resolve_campaign_ids(conn, [campaign_id])
            count = conn.execute(
                "SELECT COUNT(*) FROM experiments WHERE campaign_id = ?", (full_id,)
            ).fetchone()[0]
            rows = (
                columns_table(conn, full_id)
                if count > SAMPLE_ABOVE
                else experiment_table(store_path, full_id)
            )
            sample = choose_sample(rows, resolve_named(rows, named))
            return _read_rest(conn, str(store_path), schema_version, full_id, rows, sample)
        finally:
            conn.close()
    except (StoreError, sqlite3.Error) as exc:
        raise ReportDataError(str(exc)) from exc


def _head(conn: sqlite3.Connection, campaign_id: str) -> CampaignHead:
    row = conn.execute(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)
    ).fetchone()
    ok, failed = conn.execute(
        "SELECT COUNT(*) FILTER (WHERE m.status = 'ok'), COUNT(*) FILTER (WHERE m.status != 'ok')"
        " FROM measurements m JOIN experiments e ON e.id = m.experiment_id"
        " WHERE e.campaign_id = ?",
        (campaign_id,),
    ).fetchone()
    return CampaignHead(
        **{k: row[k] for k in ("id", "name", "source_path", "source_hash", "created_at_unix_s")},
        **{k: row[k] for k in ("status", "experiment_count", "cycles")},
        measurements_ok=ok,
        measurements_failed=failed,
    )


def _experiments(
    conn: sqlite3.Connection, campaign_id: str, sample: Sample | None
) -> tuple[list[ExperimentInfo], list[str]]:
    """The campaign's experiments in plan order and its swept axes. With a sample, an
    experiment outside its table keeps only the axes' values of its config."""
    keep = None if sample is None else set(sample.table)
    sweep = Sweep()
    provenances: dict[str, dict[str, str]] = {}  # one dict per distinct stored text
    kept: list[tuple[tuple[str, int, str | None, bool], dict[str, Any], dict[str, str] | None]] = []
    for r in conn.execute(
        "SELECT id, position, name, config_json, provenance_json FROM experiments"
        " WHERE campaign_id = ? ORDER BY position",
        (campaign_id,),
    ):
        text = r["provenance_json"]
        provenance = None
        if text is not None:
            if text not in provenances:
                provenances[text] = json.loads(text)
            provenance = provenances[text]
        differences = sweep.add_json(r["config_json"], provenance)
        detailed = keep is None or r["id"] in keep
        config = leaves(msgspec.json.decode(r["config_json"])) if detailed else differences
        kept.append(((r["id"], r["position"], r["name"], detailed), config, provenance))
    axes = sweep.axes()
    reference = sweep.reference or {}
    experiments = [
        ExperimentInfo(
            id=experiment_id,
            position=position,
            name=name,
            config=config if detailed else {a: config.get(a, reference.get(a)) for a in axes},
            provenance=provenance,
        )
        for (experiment_id, position, name, detailed), config, provenance in kept
    ]
    return experiments, axes


_CYCLES = """
    SELECT m.experiment_id, e.position, m.cycle, m.status, m.failure_reason, m.payload_json
    FROM measurements m JOIN experiments e ON e.id = m.experiment_id
    WHERE e.campaign_id = ? ORDER BY e.position, m.cycle
"""


def _cycles(conn: sqlite3.Connection, campaign_id: str) -> list[CycleInfo]:
    """Every stored cycle, its payload decoded for the fields the sections read."""
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    return [
        CycleInfo(
            experiment_id=r[0],
            position=r[1],
            cycle=r[2],
            status=r[3],
            failure_reason=r[4],
            measurement=None if r[5] is None else decode_cycle(r[5]),
        )
        for r in cursor.execute(_CYCLES, (campaign_id,))
    ]


def _timelines(
    conn: sqlite3.Connection, cycles: list[CycleInfo], shown: Sequence[str] | None
) -> tuple[list[tuple[CycleInfo, Measurement]], int]:
    """The first ``MAX_TIMELINES`` cycles with telemetry samples, of the experiments shown
    (in ``shown``'s order; None: all, in plan order), decoded whole; and how many such
    cycles there are."""
    candidates = [c for c in cycles if c.measurement is not None and c.measurement.has_samples]
    if shown is not None:
        order = {experiment_id: i for i, experiment_id in enumerate(shown)}
        candidates = sorted(
            (c for c in candidates if c.experiment_id in order),
            key=lambda c: order[c.experiment_id],
        )
    drawn = []
    for c in candidates[:MAX_TIMELINES]:
        [(raw,)] = conn.execute(
            "SELECT payload_json FROM measurements WHERE experiment_id = ? AND cycle = ?",
            (c.experiment_id, c.cycle),
        ).fetchall()
        drawn.append((c, decode_measurement(raw)))
    return drawn, len(candidates)


def _read_rest(
    conn: sqlite3.Connection,
    path: str,
    schema_version: int,
    campaign_id: str,
    rows: list[ExperimentRow],
    sample: Sample | None,
) -> CampaignData:
    facts = conn.execute(
        "SELECT source_text, coordinator_host FROM campaigns WHERE id = ?", (campaign_id,)
    ).fetchone()
    experiments, axes = _experiments(conn, campaign_id, sample)
    environments = [
        json.loads(r[0])
        for r in conn.execute(
            "SELECT DISTINCT v.payload_json FROM measurements m"
            " JOIN experiments e ON e.id = m.experiment_id"
            " JOIN environments v ON v.id = m.environment_id"
            " WHERE e.campaign_id = ? ORDER BY v.id",
            (campaign_id,),
        )
    ]
    cycles = _cycles(conn, campaign_id)
    shown = None if sample is None else sample.shown
    timelines, with_telemetry = _timelines(conn, cycles, shown)
    if sample is None:
        latency_ids, limit = [e.id for e in experiments], MAX_LATENCY_VALUES
    else:
        latency_ids, limit = sample.shown, SAMPLED_LATENCY_VALUES
    curves = len(latency_ids) if sample is None else MAX_LATENCY_CURVES
    latency: list[LatencySamples] = []
    for experiment_id in latency_ids:
        if len(latency) == curves:
            break
        if (samples := _latency(conn, experiment_id, limit)) is not None:
            latency.append(samples)
    return CampaignData(
        store_path=path,
        schema_version=schema_version,
        campaign=_head(conn, campaign_id),
        source_text=facts["source_text"],
        coordinator_host=facts["coordinator_host"],
        experiments=experiments,
        axes=axes,
        cycles=cycles,
        environments=environments,
        rows=rows,
        sample=sample,
        latency=latency,
        timelines=timelines,
        with_telemetry=with_telemetry,
    )
