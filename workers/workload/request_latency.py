"""From a backend's timed requests to a Measurement's latency fields: the per-request table,
its summaries and goodput.

Inter-token latencies travel and are stored as float32 (4 bytes each: a 40 s window at
batch 32 can hold ~2,000 requests × 127 gaps). The ITL summary is computed over those
float32 values widened back to float64, so that ``numpy.percentile`` over the stored
samples gives exactly the summary's percentiles; every other latency is kept as float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import (
    RequestTiming,
    float32_le,
    from_float32_le,
    goodput,
    request_timings,
    summaries,
)
from lem.protocol.workload import SloConfig
from lem.workers.engines.base import TimedRequest

MS_PER_S = 1000.0
NO_REQUESTS_REASON = "the backend timed no request"


def _record(
    index: int, request: TimedRequest, timing: RequestTiming, origin_s: float, itl_blob: bytes
) -> RequestRecord:
    scheduled = request.scheduled_s
    return RequestRecord(
        index=index,
        pass_index=request.pass_index,
        batch_index=request.batch_index,
        input_tokens=request.input_tokens,
        output_tokens=timing.output_tokens,
        scheduled_ms=None if scheduled is None else (scheduled - origin_s) * MS_PER_S,
        start_ms=(request.start_s - origin_s) * MS_PER_S,
        queue_ms=timing.queued_ms,
        ttft_ms=timing.ttft_ms,
        e2e_ms=timing.e2e_ms,
        tpot_ms=timing.tpot_ms,
        itl_ms_f32le=itl_blob,
    )


def latency_fields(
    requests: Sequence[TimedRequest],
    window_started_s: float,
    duration_s: float,
    slo: SloConfig,
    unavailable_reason: str | None,
) -> dict[str, Any]:
    """The latency fields of a Measurement (``requests``, the five summaries, ``goodput``,
    ``latency_unavailable_reason``) from ``requests`` timed in a window that began at
    ``window_started_s`` (perf_counter s) and lasted ``duration_s`` s.

    Goodput needs an SLO and a window of positive duration. Raises ValueError for a request
    without tokens or with times out of order (see ``request_timings``).
    """
    if not requests:
        return {
            "requests": [],
            "latency_unavailable_reason": unavailable_reason or NO_REQUESTS_REASON,
        }
    records: list[RequestRecord] = []
    timings: list[RequestTiming] = []
    itls_ms: list[float] = []
    for index, request in enumerate(requests):
        timing = request_timings(request.start_s, request.token_times_s, request.queued_s)
        blob = float32_le(timing.itls_ms)
        itls_ms.extend(from_float32_le(blob))
        timings.append(timing)
        records.append(_record(index, request, timing, window_started_s, blob))
    good = None
    if slo.is_set and duration_s > 0:
        good = goodput(timings, slo.ttft_ms, slo.tpot_ms, duration_s)
    return {
        "requests": records,
        **summaries(records, itls_ms),
        "goodput": good,
        "latency_unavailable_reason": None,
    }
