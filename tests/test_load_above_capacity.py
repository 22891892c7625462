"""The ``load_above_capacity`` judgement on server-mode requests: a queue that grows
through the run is flagged; a level one, however busy, is not."""

from __future__ import annotations

import msgspec

from lem.protocol.latency import RequestRecord
from lem.protocol.latency_stats import MIN_REQUESTS_TO_JUDGE_LOAD, load_above_capacity


def records(
    queues_ms: list[float], service_ms: float, arrivals: bool = True
) -> list[RequestRecord]:
    """Requests arriving 100 ms apart (or at a fixed concurrency: no arrival times), each
    queued ``queues_ms[i]`` ms and then served in ``service_ms`` ms."""
    return [
        RequestRecord(
            index=i, pass_index=0, batch_index=0, input_tokens=8, output_tokens=16,
            scheduled_ms=100.0 * i if arrivals else None, start_ms=100.0 * i,
            queue_ms=queue_ms, ttft_ms=queue_ms + 20.0, e2e_ms=queue_ms + service_ms,
            tpot_ms=(service_ms - 20.0) / 15, itl_ms_f32le=b"",
        )
        for i, queue_ms in enumerate(queues_ms)
    ]  # fmt: skip


def test_a_queue_that_grows_all_run_is_flagged() -> None:
    # one slot, a request every 100 ms, 2.4 s of service: each waits 2.3 s longer
    assert load_above_capacity(records([2300.0 * i for i in range(40)], 2400.0))


def test_a_level_queue_is_not_flagged_however_busy() -> None:
    assert not load_above_capacity(records([0.0] * 40, 2400.0))
    busy = [3000.0 + (200.0 if i % 2 else -200.0) for i in range(40)]  # always ~3 s deep
    assert not load_above_capacity(records(busy, 2000.0))


def test_no_judgement_without_arrival_times_or_with_few_requests() -> None:
    growing = [2300.0 * i for i in range(40)]
    assert not load_above_capacity(records(growing, 2400.0, arrivals=False))
    few = growing[: MIN_REQUESTS_TO_JUDGE_LOAD - 1]
    assert not load_above_capacity(records(few, 2400.0))
    assert load_above_capacity(records(growing[:MIN_REQUESTS_TO_JUDGE_LOAD], 2400.0))


def remote(ttfts_ms: list[float], decode_ms: float) -> list[RequestRecord]:
    """A remote server's requests as lem's client sees them: sent on time, no queue time
    known, the server's queue inside the time to first token."""
    return [
        RequestRecord(
            index=i, pass_index=0, batch_index=None, input_tokens=8, output_tokens=16,
            scheduled_ms=100.0 * i, start_ms=100.0 * i, queue_ms=None, ttft_ms=ttft_ms,
            e2e_ms=ttft_ms + decode_ms, tpot_ms=decode_ms / 15, itl_ms_f32le=b"",
        )
        for i, ttft_ms in enumerate(ttfts_ms)
    ]  # fmt: skip


def test_a_remote_servers_growing_time_to_first_token_is_flagged() -> None:
    assert load_above_capacity(remote([30.0 + 150.0 * i for i in range(40)], 300.0))
    assert not load_above_capacity(remote([30.0 + (i % 3) * 10.0 for i in range(40)], 300.0))


def test_a_client_that_fell_behind_its_schedule_is_flagged() -> None:
    late = remote([30.0] * 40, 300.0)
    late = [msgspec.structs.replace(r, start_ms=r.start_ms + 120.0 * r.index) for r in late]
    assert load_above_capacity(late)
