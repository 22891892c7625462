"""From timed requests to a Measurement's latency fields: the per-request table, summaries
equal to numpy over exactly the table's values, goodput, and the size of it on the wire."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lem.protocol import codec
from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import float32_le, from_float32_le
from lem.protocol.messages import Result
from lem.protocol.result_payload import replace_fields
from lem.protocol.workload import SloConfig
from lem.workers.engines.base import TimedRequest
from lem.workers.workload.request_latency import NO_REQUESTS_REASON, latency_fields
from tests.test_store import measurement


def synthetic_requests(count: int, tokens: int, seed: int = 0) -> list[TimedRequest]:
    """``count`` requests of up to ``tokens`` tokens with random gaps (s), batches of 32."""
    rng = random.Random(seed)
    requests = []
    for index in range(count):
        start_s = 100.0 + index * 0.01
        times_s, t_s = [], start_s + rng.uniform(0.001, 0.2)
        for _ in range(rng.randint(1, tokens)):
            times_s.append(t_s)
            t_s += rng.expovariate(50.0)
        requests.append(
            TimedRequest(
                pass_index=index // 64,
                batch_index=(index % 64) // 32,
                input_tokens=16,
                start_s=start_s,
                token_times_s=times_s,
                queued_s=rng.uniform(0, 0.5),
            )
        )
    return requests


def test_float32_blob_round_trip() -> None:
    values_ms = [0.1, 12.345678, 1e-3, 250.0]
    blob = float32_le(values_ms)
    assert len(blob) == 4 * len(values_ms)
    assert from_float32_le(blob) == np.frombuffer(blob, dtype="<f4").astype(np.float64).tolist()
    assert from_float32_le(blob) == pytest.approx(values_ms, rel=1e-6)
    assert from_float32_le(b"") == []


def test_summaries_equal_numpy_over_the_records() -> None:
    fields = latency_fields(synthetic_requests(300, 40), 99.0, 30.0, SloConfig(), None)
    records: list[RequestRecord] = fields["requests"]
    itls = np.concatenate([np.frombuffer(r.itl_ms_f32le, dtype="<f4") for r in records])
    columns = {
        "ttft_ms": np.array([r.ttft_ms for r in records]),
        "e2e_ms": np.array([r.e2e_ms for r in records]),
        "tpot_ms": np.array([r.tpot_ms for r in records if r.tpot_ms is not None]),
        "queue_ms": np.array([r.queue_ms for r in records if r.queue_ms is not None]),
        "itl_ms": itls.astype(np.float64),
    }
    for name, samples in columns.items():
        summary = fields[name]
        assert summary.count == len(samples)
        for percent in (50, 90, 95, 99):
            expected = float(np.percentile(samples, percent))
            assert getattr(summary, f"p{percent}_ms") == pytest.approx(expected, rel=1e-15), name
        assert summary.mean_ms == pytest.approx(float(np.mean(samples)), rel=1e-12)
    assert [r.index for r in records] == list(range(300))
    assert all(r.start_ms == pytest.approx((100.0 + r.index * 0.01 - 99.0) * 1000) for r in records)
    assert fields["goodput"] is None and fields["latency_unavailable_reason"] is None


def test_goodput_counts_requests_within_both_slos() -> None:
    requests = synthetic_requests(200, 20, seed=3)
    fields = latency_fields(requests, 99.0, 10.0, SloConfig(ttft_ms=100.0, tpot_ms=25.0), None)
    records: list[RequestRecord] = fields["requests"]
    good = [
        r for r in records
        if r.ttft_ms <= 100.0 and (r.tpot_ms is None or r.tpot_ms <= 25.0)
    ]  # fmt: skip
    assert 0 < len(good) < len(records)
    assert fields["goodput"].good_requests == len(good)
    assert fields["goodput"].good_share == len(good) / len(records)
    assert fields["goodput"].good_output_tokens_per_s == sum(r.output_tokens for r in good) / 10
    assert (fields["goodput"].ttft_slo_ms, fields["goodput"].tpot_slo_ms) == (100.0, 25.0)


def test_no_requests_give_a_reason_and_no_summaries() -> None:
    assert latency_fields([], 0.0, 1.0, SloConfig(ttft_ms=1.0), "timing off") == {
        "requests": [],
        "latency_unavailable_reason": "timing off",
    }
    assert latency_fields([], 0.0, 1.0, SloConfig(), None)["latency_unavailable_reason"] == (
        NO_REQUESTS_REASON
    )


def test_a_40_s_window_at_batch_32_fits_a_sane_message() -> None:
    """~2,000 requests × 127 ITLs: the Result frame stays near 1.2 MB (float32 ITLs)."""
    fields = latency_fields(synthetic_requests(2000, 128, seed=1), 99.0, 40.0, SloConfig(), None)
    records: list[RequestRecord] = fields["requests"]
    itl_count = sum(r.output_tokens - 1 for r in records)
    frame = codec.encode(Result(worker_id="w", measurement=replace_fields(
        measurement("e"), **fields)))  # fmt: skip
    assert len(frame) < 4 * itl_count + 100 * len(records) + 20_000
    assert codec.decode_event(frame) == Result(
        worker_id="w", measurement=replace_fields(measurement("e"), **fields)
    )
