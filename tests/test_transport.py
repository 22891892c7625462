"""Hub (ROUTER) and WorkerChannel (DEALER + I/O thread) talk over ipc:// and tcp://."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lem.coordinator.execution.hub import Hub, Received
from lem.protocol.config import ExperimentConfig
from lem.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Cancel,
    Heartbeat,
    Hello,
    Ping,
    Pong,
    Progress,
    Run,
)
from lem.workers.runtime.channel import WorkerChannel


def _hello(worker_id: str) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        pid=1,
        backend="pytorch",
        python_executable="python",
        python_version="3.11",
        lem_version="0",
        packages={},
        visible_gpus=[],
        cuda_visible_devices="",
    )


def _collect(hub: Hub, want: type, timeout_s: float = 5.0) -> Received:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for item in hub.poll(0.2):
            if isinstance(item, Received) and isinstance(item.event, want):
                return item
    raise AssertionError(f"no {want.__name__} within {timeout_s} s")


@pytest.fixture(params=[None, "tcp://127.0.0.1:*"], ids=["ipc", "tcp"])
def hub(request: pytest.FixtureRequest) -> Iterator[Hub]:
    h = Hub(request.param)
    yield h
    h.close()


def test_endpoint_kind(hub: Hub) -> None:
    assert hub.endpoint.startswith(("ipc://", "tcp://127.0.0.1:"))
    assert not hub.endpoint.endswith(":*")


def test_handshake_commands_events_and_ping(hub: Hub) -> None:
    channel = WorkerChannel(hub.endpoint, "w-test", heartbeat_interval_s=0.2)
    channel.start(_hello("w-test"))
    try:
        hello = _collect(hub, Hello)
        assert hello.worker_id == "w-test"
        assert hub.send("w-test", Accept(heartbeat_interval_s=0.2, coordinator_timeout_s=60.0))
        assert isinstance(channel.commands.get(timeout=5), Accept)
        run = Run(experiment_id="e1", cycle=0, config=ExperimentConfig())
        hub.send("w-test", run)
        assert channel.commands.get(timeout=5) == run
        channel.send(Progress(worker_id="w-test", experiment_id="e1", phase="warmup"))
        progress = _collect(hub, Progress).event
        assert isinstance(progress, Progress) and progress.phase == "warmup"
        beat = _collect(hub, Heartbeat)
        assert beat.worker_id == "w-test"
        hub.send("w-test", Ping(seq=5, payload=b"abc"))
        pong = _collect(hub, Pong).event
        assert pong == Pong(seq=5, payload=b"abc")
    finally:
        channel.close()


def test_cancel_flags_the_running_experiment_at_once(hub: Hub) -> None:
    channel = WorkerChannel(hub.endpoint, "w-c", heartbeat_interval_s=0.2)
    channel.start(_hello("w-c"))
    try:
        _collect(hub, Hello)
        channel.busy_experiment_id = "e7"
        hub.send("w-c", Cancel(experiment_id="other"))
        hub.send("w-c", Cancel(experiment_id="e7"))
        assert channel.cancel_requested.wait(5)
    finally:
        channel.close()


def test_send_to_unknown_worker_reports_false(hub: Hub) -> None:
    assert hub.send("nobody", Accept(heartbeat_interval_s=1, coordinator_timeout_s=1)) is False
