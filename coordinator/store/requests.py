"""The latency side of the results store: a measurement's latency columns and its per-request
table (``request_latencies``, see ``store_schema.REQUEST_LATENCIES_DDL``).

A Measurement's ``latency.requests`` go to ``request_latencies``, one row each; its JSON payload is
stored with ``requests: []``, so that reading payloads stays cheap.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from msgspec import structs

from lem.protocol.latency import RequestRecord
from lem.protocol.results import Measurement

_REQUEST_COLUMNS = (
    "request_index", "pass_index", "batch_index", "input_tokens", "output_tokens",
    "scheduled_ms", "start_ms", "queue_ms", "ttft_ms", "e2e_ms", "tpot_ms", "itl_ms_f32le",
)  # fmt: skip
# The RequestRecord field of each column (same order).
_RECORD_FIELDS = ("index", *_REQUEST_COLUMNS[1:])


def latency_columns(m: Measurement) -> dict[str, Any]:
    """The ``measurements`` columns of ``m``'s latency: mode, TTFT/ITL p50 and p99 (ms) and
    goodput share (NULL when not measured)."""
    latency = m.latency
    return {
        "workload_mode": m.work.workload_mode,
        "ttft_p50_ms": latency.ttft_ms.p50_ms if latency.ttft_ms else None,
        "ttft_p99_ms": latency.ttft_ms.p99_ms if latency.ttft_ms else None,
        "itl_p50_ms": latency.itl_ms.p50_ms if latency.itl_ms else None,
        "itl_p99_ms": latency.itl_ms.p99_ms if latency.itl_ms else None,
        "goodput_share": latency.goodput.good_share if latency.goodput else None,
    }


def without_requests(m: Measurement) -> Measurement:
    """``m`` as its JSON payload is stored: the per-request table left out."""
    if not m.latency.requests:
        return m
    return structs.replace(m, latency=structs.replace(m.latency, requests=[]))


def insert_requests(
    conn: sqlite3.Connection, measurement_id: int, records: list[RequestRecord]
) -> None:
    """Insert one ``request_latencies`` row per record of measurement ``measurement_id``."""
    marks = ", ".join("?" for _ in range(len(_REQUEST_COLUMNS) + 1))
    conn.executemany(
        f"INSERT INTO request_latencies (measurement_id, {', '.join(_REQUEST_COLUMNS)})"
        f" VALUES ({marks})",
        (
            (measurement_id, *(getattr(record, field) for field in _RECORD_FIELDS))
            for record in records
        ),
    )


def read_requests(conn: sqlite3.Connection, experiment_id: str, cycle: int) -> list[RequestRecord]:
    """The per-request table of one stored cycle, in request order ([] when it has none)."""
    rows = conn.execute(
        f"SELECT {', '.join('r.' + c for c in _REQUEST_COLUMNS)} FROM request_latencies r"
        " JOIN measurements m ON m.id = r.measurement_id"
        " WHERE m.experiment_id = ? AND m.cycle = ? ORDER BY r.request_index",
        (experiment_id, cycle),
    )
    return [
        RequestRecord(**dict(zip(_RECORD_FIELDS, (*row[:-1], bytes(row[-1])), strict=True)))
        for row in rows
    ]
