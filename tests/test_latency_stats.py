"""Per-request latencies, their summaries (equal to numpy.percentile) and goodput."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from lem.protocol.latency_stats import (
    LatencySummary,
    RequestTiming,
    goodput,
    meets_slo,
    request_timings,
    summarise_ms,
)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1000, 4567])
@pytest.mark.parametrize("seed", [0, 1])
def test_summary_equals_numpy(size: int, seed: int) -> None:
    samples_ms = np.random.default_rng(seed).lognormal(3.0, 1.0, size=size).tolist()
    summary = summarise_ms(samples_ms)
    assert summary is not None
    assert summary.count == size
    for percent, got in (
        (50, summary.p50_ms),
        (90, summary.p90_ms),
        (95, summary.p95_ms),
        (99, summary.p99_ms),
    ):
        assert got == pytest.approx(float(np.percentile(samples_ms, percent)), rel=1e-15)
    assert summary.mean_ms == pytest.approx(float(np.mean(samples_ms)), rel=1e-12)
    assert summary.min_ms == min(samples_ms)
    assert summary.max_ms == max(samples_ms)


def test_summary_of_known_samples() -> None:
    assert summarise_ms([]) is None
    assert summarise_ms([7.0]) == LatencySummary(
        count=1, mean_ms=7, p50_ms=7, p90_ms=7, p95_ms=7, p99_ms=7, min_ms=7, max_ms=7
    )
    summary = summarise_ms([10.0, 0.0])  # unsorted on purpose
    assert summary is not None
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms) == pytest.approx((5.0, 9.0, 9.9))
    # It encodes as JSON like every other result.
    assert msgspec.json.decode(msgspec.json.encode(summary), type=LatencySummary) == summary


def test_summary_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        summarise_ms([1.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        summarise_ms([math.inf])


def test_request_timings() -> None:
    timing = request_timings(10.0, [10.2, 10.25, 10.35, 10.5], queued_s=0.05)
    assert timing.output_tokens == 4
    assert timing.ttft_ms == pytest.approx(200.0)
    assert timing.itls_ms == pytest.approx([50.0, 100.0, 150.0])
    assert len(timing.itls_ms) == timing.output_tokens - 1
    assert timing.tpot_ms == pytest.approx(100.0)
    assert timing.e2e_ms == pytest.approx(500.0)
    assert timing.ttft_ms < timing.e2e_ms
    assert timing.queued_ms == pytest.approx(50.0)


@pytest.mark.parametrize("tokens", [2, 5, 64])
def test_itl_count_and_ttft_below_e2e(tokens: int) -> None:
    times_s = np.cumsum(np.random.default_rng(tokens).exponential(0.02, size=tokens)) + 1.0
    timing = request_timings(1.0, times_s.tolist())
    assert len(timing.itls_ms) == tokens - 1
    assert timing.ttft_ms < timing.e2e_ms
    assert timing.tpot_ms == pytest.approx(sum(timing.itls_ms) / (tokens - 1))
    assert timing.queued_ms is None


def test_one_token_has_no_tpot() -> None:
    timing = request_timings(0.0, [0.3])
    assert timing.tpot_ms is None
    assert timing.itls_ms == []
    assert timing.ttft_ms == timing.e2e_ms == pytest.approx(300.0)


def test_request_timings_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        request_timings(0.0, [])
    with pytest.raises(ValueError, match="sorted"):
        request_timings(0.0, [0.1, 0.3, 0.2])
    with pytest.raises(ValueError, match="precedes"):
        request_timings(1.0, [0.9, 1.1])
    with pytest.raises(ValueError, match="finite"):
        request_timings(0.0, [0.1, math.nan])
    with pytest.raises(ValueError, match="queued_s"):
        request_timings(0.0, [0.1], queued_s=-0.1)


def _timing(ttft_ms: float, tpot_ms: float | None, tokens: int) -> RequestTiming:
    return RequestTiming(
        output_tokens=tokens,
        ttft_ms=ttft_ms,
        itls_ms=[],
        tpot_ms=tpot_ms,
        e2e_ms=ttft_ms + (tpot_ms or 0.0) * (tokens - 1),
        queued_ms=None,
    )


def test_goodput_on_hand_made_set() -> None:
    timings = [
        _timing(100.0, 20.0, 10),  # good
        _timing(300.0, 20.0, 20),  # TTFT too slow
        _timing(100.0, 60.0, 40),  # TPOT too slow
        _timing(200.0, 50.0, 30),  # good: both limits are inclusive
        _timing(150.0, None, 1),  # good: one token has no TPOT to miss
    ]
    result = goodput(timings, ttft_slo_ms=200.0, tpot_slo_ms=50.0, duration_s=2.0)
    assert result.requests == 5
    assert result.good_requests == 3
    assert result.good_share == pytest.approx(0.6)
    assert result.good_output_tokens == 41
    assert result.good_output_tokens_per_s == pytest.approx(20.5)
    assert result.duration_s == 2.0

    only_ttft = goodput(timings, ttft_slo_ms=200.0, tpot_slo_ms=None, duration_s=2.0)
    assert only_ttft.good_requests == 4
    no_slo = goodput(timings, ttft_slo_ms=None, tpot_slo_ms=None, duration_s=1.0)
    assert no_slo.good_share == 1.0
    assert no_slo.good_output_tokens_per_s == pytest.approx(101.0)
    assert not meets_slo(timings[1], 200.0, None)


def test_goodput_of_nothing_and_bad_input() -> None:
    empty = goodput([], ttft_slo_ms=100.0, tpot_slo_ms=10.0, duration_s=1.0)
    assert empty.good_share is None
    assert empty.good_output_tokens_per_s == 0.0
    for duration_s in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="duration_s"):
            goodput([], 100.0, 10.0, duration_s)
    with pytest.raises(ValueError, match="ttft_slo_ms"):
        goodput([], -1.0, None, 1.0)
    with pytest.raises(ValueError, match="tpot_slo_ms"):
        goodput([], None, math.nan, 1.0)
