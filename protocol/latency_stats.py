"""Per-request latency: TTFT, inter-token latencies, TPOT, end-to-end; summaries and goodput.

All durations are milliseconds (``*_ms``); timestamps passed in are seconds (``*_s``) on one
monotonic clock. Summaries keep every sample in memory and sort it: exact, and fine for
the hundreds of thousands of samples a run yields. A streaming estimator (t-digest, P²)
for far more samples is not needed now and not provided.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
from array import array
from collections.abc import Sequence

import msgspec

from lem.protocol.latency import Goodput, LatencySummary, RequestRecord

__all__ = [
    "Goodput",
    "LatencySummary",
    "RequestTiming",
    "goodput",
    "meets_slo",
    "request_timings",
    "summarise_ms",
]


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Linear interpolation between closest ranks, as numpy's default 'linear' method.

    Mirrors numpy's arithmetic (virtual index (n-1)·q, and its two-sided lerp) so results
    match ``numpy.percentile`` to the last bit in practice.
    """
    n = len(ordered)
    index = (percent / 100) * (n - 1)
    lo = min(max(math.floor(index), 0), n - 1)
    hi = min(lo + 1, n - 1)
    t = index - lo
    a, b = ordered[lo], ordered[hi]
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def summarise_ms(samples_ms: Sequence[float]) -> LatencySummary | None:
    """Count, mean, p50/p90/p95/p99, min and max of ``samples_ms`` (ms); None for none.

    Raises ValueError for a NaN or infinite sample.
    """
    if not samples_ms:
        return None
    if not all(math.isfinite(x) for x in samples_ms):
        raise ValueError("latency samples must be finite numbers (ms)")
    ordered = sorted(samples_ms)
    return LatencySummary(
        count=len(ordered),
        mean_ms=math.fsum(ordered) / len(ordered),
        p50_ms=_percentile(ordered, 50),
        p90_ms=_percentile(ordered, 90),
        p95_ms=_percentile(ordered, 95),
        p99_ms=_percentile(ordered, 99),
        min_ms=ordered[0],
        max_ms=ordered[-1],
    )


class RequestTiming(msgspec.Struct, frozen=True, kw_only=True):
    """One request's latencies, all in ms.

    ``tpot_ms`` (time per output token after the first) is None for a one-token output;
    ``queued_ms`` is None when the queueing delay was not known.
    """

    output_tokens: int
    ttft_ms: float
    itls_ms: list[float]
    tpot_ms: float | None
    e2e_ms: float
    queued_ms: float | None


def request_timings(
    request_start_s: float, token_times_s: Sequence[float], queued_s: float | None = None
) -> RequestTiming:
    """Latencies of one request from its send time and its tokens' arrival times (all s).

    TTFT = first token - start; ITLs = gaps between consecutive tokens (tokens - 1 of
    them); TPOT = (last - first) / (tokens - 1); e2e = last token - start. ``queued_s`` is
    a queueing delay (a duration in s, e.g. as the server reports it), passed through in
    ms; it is not subtracted from anything. Raises ValueError for no tokens, token times
    out of order, a token before the start, a non-finite time, or a negative delay.
    """
    if not token_times_s:
        raise ValueError("a request needs at least one token time")
    if not all(math.isfinite(t) for t in (request_start_s, *token_times_s)):
        raise ValueError("request start and token times must be finite (s)")
    if token_times_s[0] < request_start_s:
        raise ValueError(
            f"first token at {token_times_s[0]} s precedes the request start {request_start_s} s"
        )
    itls_ms = [(b - a) * 1000.0 for a, b in itertools.pairwise(token_times_s)]
    if any(gap < 0 for gap in itls_ms):
        raise ValueError("token times must be sorted in non-decreasing order")
    if queued_s is not None and not (queued_s >= 0 and math.isfinite(queued_s)):
        raise ValueError(f"queued_s must be a finite duration >= 0, got {queued_s}")
    first_s, last_s = token_times_s[0], token_times_s[-1]
    n = len(token_times_s)
    return RequestTiming(
        output_tokens=n,
        ttft_ms=(first_s - request_start_s) * 1000.0,
        itls_ms=itls_ms,
        tpot_ms=(last_s - first_s) * 1000.0 / (n - 1) if n > 1 else None,
        e2e_ms=(last_s - request_start_s) * 1000.0,
        queued_ms=None if queued_s is None else queued_s * 1000.0,
    )


def meets_slo(timing: RequestTiming, ttft_slo_ms: float | None, tpot_slo_ms: float | None) -> bool:
    """Whether TTFT <= ``ttft_slo_ms`` and TPOT <= ``tpot_slo_ms`` (None: no limit).

    A one-token request has no TPOT and so meets any TPOT SLO.
    """
    if ttft_slo_ms is not None and timing.ttft_ms > ttft_slo_ms:
        return False
    return not (
        tpot_slo_ms is not None and timing.tpot_ms is not None and timing.tpot_ms > tpot_slo_ms
    )


def goodput(
    timings: Sequence[RequestTiming],
    ttft_slo_ms: float | None,
    tpot_slo_ms: float | None,
    duration_s: float,
) -> Goodput:
    """Share of requests meeting both SLOs (ms), and their output tokens per s of ``duration_s``.

    Raises ValueError for a duration that is not > 0 or a negative SLO.
    """
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a finite number > 0, got {duration_s}")
    for name, slo in (("ttft_slo_ms", ttft_slo_ms), ("tpot_slo_ms", tpot_slo_ms)):
        if slo is not None and not slo >= 0:
            raise ValueError(f"{name} must be >= 0 or None, got {slo}")
    good = [t for t in timings if meets_slo(t, ttft_slo_ms, tpot_slo_ms)]
    tokens = sum(t.output_tokens for t in good)
    return Goodput(
        requests=len(timings),
        good_requests=len(good),
        good_share=len(good) / len(timings) if timings else None,
        good_output_tokens=tokens,
        good_output_tokens_per_s=tokens / duration_s,
        duration_s=duration_s,
        ttft_slo_ms=ttft_slo_ms,
        tpot_slo_ms=tpot_slo_ms,
    )


def float32_le(values_ms: Sequence[float]) -> bytes:
    """``values_ms`` as float32 little-endian bytes (4 per value)."""
    packed = array("f", values_ms)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def from_float32_le(blob: bytes) -> list[float]:
    """The values of a float32 little-endian blob, widened to Python floats."""
    unpacked = array("f")
    unpacked.frombytes(blob)
    if sys.byteorder == "big":
        unpacked.byteswap()
    return unpacked.tolist()


def summaries(
    records: Sequence[RequestRecord], itls_ms: Sequence[float]
) -> dict[str, LatencySummary | None]:
    """The five latency summaries of a Measurement (ms) from its request table and every
    inter-token gap (ms)."""
    return {
        "ttft_ms": summarise_ms([r.ttft_ms for r in records]),
        "itl_ms": summarise_ms(itls_ms),
        "tpot_ms": summarise_ms([r.tpot_ms for r in records if r.tpot_ms is not None]),
        "e2e_ms": summarise_ms([r.e2e_ms for r in records]),
        "queue_ms": summarise_ms([r.queue_ms for r in records if r.queue_ms is not None]),
    }


MIN_REQUESTS_TO_JUDGE_LOAD = 8


def load_above_capacity(records: Sequence[RequestRecord]) -> bool:
    """Whether server-mode arrivals outran the engine: the queue kept growing through the
    run, so TTFT and end-to-end latency measure the backlog, not the engine.

    Requests in arrival order; judged only with arrival times (a Poisson or gamma process,
    not a fixed concurrency) and at least ``MIN_REQUESTS_TO_JUDGE_LOAD`` requests. True when
    the median waiting time (ms) of the last quarter exceeds twice the first quarter's plus
    the median service time (end-to-end minus waiting): a stable queue, even a busy one,
    keeps its delay about level from the first arrivals to the last.

    Waiting is ``queue_ms`` where the engine says when a request's work began (in-process
    engines). A remote server's queue is invisible to lem: there the wait is the time from
    the scheduled arrival to the first token (sending late, the server's queue and its
    prefill), and the service the rest of the request (end-to-end minus TTFT).
    """
    timed = [r for r in records if r.scheduled_ms is not None]
    if not timed or any(r.queue_ms is None for r in timed):
        timed = [r for r in timed if r.queue_ms is None]
        waits = [(r.start_ms - (r.scheduled_ms or 0.0)) + r.ttft_ms for r in timed]
        services = [r.e2e_ms - r.ttft_ms for r in timed]
    else:
        waits = [r.queue_ms or 0.0 for r in timed]
        services = [r.e2e_ms - (r.queue_ms or 0.0) for r in timed]
    if len(timed) < MIN_REQUESTS_TO_JUDGE_LOAD:
        return False
    order = sorted(range(len(timed)), key=lambda i: timed[i].scheduled_ms or 0.0)
    quarter = len(order) // 4
    first_ms = statistics.median(waits[i] for i in order[:quarter])
    last_ms = statistics.median(waits[i] for i in order[-quarter:])
    return last_ms > 2.0 * first_ms + statistics.median(services)
