"""Latency result types: per-measurement summaries, goodput, and the per-request table.

All durations are milliseconds (``*_ms``). Summaries are computed by
``lem.protocol.latency_stats`` over exactly the values a ``RequestRecord`` carries, so that
``numpy.percentile`` over the stored samples gives the summary's percentiles.
"""

from __future__ import annotations

import msgspec


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Summary of latency samples, all in ms; percentiles as ``numpy.percentile`` gives."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float


class Goodput(msgspec.Struct, frozen=True, kw_only=True):
    """Requests meeting both SLOs, and their output token rate over the run.

    ``good_share`` is a fraction in [0, 1], None when there were no requests.
    ``ttft_slo_ms`` / ``tpot_slo_ms`` are the targets judged against (None: no limit).
    """

    requests: int
    good_requests: int
    good_share: float | None
    good_output_tokens: int
    good_output_tokens_per_s: float
    duration_s: float
    ttft_slo_ms: float | None = None
    tpot_slo_ms: float | None = None


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One request of a measured window (encoded as an array: no field names on the wire).

    ``index``: its place in send order. ``pass_index``: the pass over the prompt set it
    belongs to; ``batch_index``: its batch within the pass (offline; None in server mode).
    ``scheduled_ms``: when the arrival process meant to send it and ``start_ms``: when it
    was sent (offline: its generate call began), both ms after the window began.
    ``queue_ms``: how long it waited before its work began (offline: from its pass's start
    to its generate call; server: from sending to the engine scheduling it).
    ``ttft_ms`` and ``e2e_ms`` count from ``start_ms``; ``tpot_ms`` = (e2e − TTFT) /
    (output tokens − 1), None for one token. ``itl_ms_f32le``: the output tokens − 1 gaps
    between consecutive tokens, ms, as float32 little-endian (4 bytes each).
    """

    index: int
    pass_index: int
    batch_index: int | None
    input_tokens: int
    output_tokens: int
    scheduled_ms: float | None
    start_ms: float
    queue_ms: float | None
    ttft_ms: float
    e2e_ms: float
    tpot_ms: float | None
    itl_ms_f32le: bytes
