"""Coordinator ↔ worker message round-trip latency over ipc:// (and tcp:// for comparison).

Starts one real worker process (PyTorch backend, CPU), completes the handshake, then sends
``Ping`` commands one at a time and times each ``Pong`` (answered by the worker's I/O
thread). Prints p50/p99/max in microseconds as one JSON line per transport.

    python benchmarks/roundtrip.py --count 5000 --payload-bytes 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lem.coordinator.execution.gpus import CPU_ONLY
from lem.coordinator.execution.hub import Hub
from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec
from lem.coordinator.execution.mailbox import Lost
from lem.coordinator.execution.supervisor import Supervisor
from lem.protocol.messages import Ping, Pong


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(
    endpoint: str | None, count: int, payload_bytes: int, work_dir: Path
) -> dict[str, object]:
    hub = Hub(endpoint)
    supervisor = Supervisor(hub, LocalProcessLauncher())
    spec = WorkerSpec(
        worker_id="bench",
        backend="pytorch",
        endpoint=hub.endpoint,
        assignment=CPU_ONLY,
        journal_path=work_dir / "bench.jsonl",
        log_path=work_dir / "bench.log",
        curve=hub.worker_keys,  # tcp:// is CurveZMQ
    )
    handle = supervisor.start_worker(spec)
    payload = b"x" * payload_bytes
    rtts_us: list[float] = []
    try:
        for seq in range(count + 200):
            start = time.perf_counter()
            hub.send("bench", Ping(seq=seq, payload=payload))
            while True:
                event = handle.mailbox.get(5.0)
                if isinstance(event, Pong) and event.seq == seq:
                    break
                if event is None or isinstance(event, Lost):
                    raise RuntimeError(f"no pong within 5 s: {event}")
            if seq >= 200:  # the first 200 warm the path up
                rtts_us.append((time.perf_counter() - start) * 1e6)
    finally:
        supervisor.stop_worker(handle, "benchmark done")
        hub.close()
    rtts_us.sort()
    return {
        "transport": hub.endpoint.split(":", 1)[0],
        "count": count,
        "payload_bytes": payload_bytes,
        "p50_us": round(percentile(rtts_us, 50), 1),
        "p99_us": round(percentile(rtts_us, 99), 1),
        "max_us": round(rtts_us[-1], 1),
        "mean_us": round(statistics.fmean(rtts_us), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--tcp", action="store_true", help="also measure tcp://127.0.0.1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lem-bench-") as tmp:
        endpoints: list[str | None] = [None] + (["tcp://127.0.0.1:*"] if args.tcp else [])
        for endpoint in endpoints:
            print(json.dumps(measure(endpoint, args.count, args.payload_bytes, Path(tmp))))


if __name__ == "__main__":
    main()
