"""Hub (ROUTER + its I/O thread) and WorkerChannel (DEALER + I/O thread) talk over ipc://
and tcp:// (CurveZMQ, with the hub's worker keys); the hub's heartbeats, liveness, stranger
frames, threads and shutdown."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from structlog.testing import capture_logs

from lem.coordinator.execution.hub import Hub, HubClosed
from lem.coordinator.execution.launcher import LocalProcess
from lem.coordinator.execution.mailbox import Lost, Mailbox
from lem.protocol.codec import decode_command, encode
from lem.protocol.config import ExperimentConfig
from lem.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Cancel,
    CoordinatorHeartbeat,
    Event,
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


def _collect(box: Mailbox, want: type, timeout_s: float = 5.0) -> Event:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        event = box.get(remaining)
        assert not isinstance(event, Heartbeat), "heartbeats are not filed"
        assert not isinstance(event, Lost), event
        if event is not None and isinstance(event, want):
            return event
    raise AssertionError(f"no {want.__name__} within {timeout_s} s")


def _hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lem-hub-io"]


@pytest.fixture(params=[None, "tcp://127.0.0.1:*"], ids=["ipc", "tcp"])
def hub(request: pytest.FixtureRequest) -> Iterator[Hub]:
    h = Hub(request.param)
    yield h
    h.close()


@pytest.fixture
def dealer() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for raw DEALER sockets that play a worker by hand."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _raw_worker(ctx: zmq.Context[zmq.Socket[bytes]], hub: Hub, worker_id: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, worker_id.encode())
    if hub.worker_keys is not None:  # tcp://: the campaign's keys
        hub.worker_keys.apply(sock)
    sock.connect(hub.endpoint)
    sock.send(encode(_hello(worker_id)))
    return sock


def test_endpoint_kind(hub: Hub) -> None:
    assert hub.endpoint.startswith(("ipc://", "tcp://127.0.0.1:"))
    assert not hub.endpoint.endswith(":*")


def test_handshake_commands_events_and_ping(hub: Hub) -> None:
    box = hub.attach("w-test", heartbeat_interval_s=0.2)
    channel = WorkerChannel(hub.endpoint, "w-test", heartbeat_interval_s=0.1, curve=hub.worker_keys)
    channel.start(_hello("w-test"))
    try:
        hello = _collect(box, Hello)
        assert isinstance(hello, Hello) and hello.worker_id == "w-test"
        assert hub.send("w-test", Accept(heartbeat_interval_s=0.1, coordinator_timeout_s=60.0))
        assert isinstance(channel.commands.get(timeout=5), Accept)
        run = Run(experiment_id="e1", cycle=0, config=ExperimentConfig())
        hub.send("w-test", run)
        assert channel.commands.get(timeout=5) == run
        time.sleep(0.3)  # heartbeats come meanwhile: _collect fails if one is filed
        channel.send(Progress(worker_id="w-test", experiment_id="e1", phase="warmup"))
        progress = _collect(box, Progress)
        assert isinstance(progress, Progress) and progress.phase == "warmup"
        hub.send("w-test", Ping(seq=5, payload=b"abc"))
        assert _collect(box, Pong) == Pong(seq=5, payload=b"abc")
        assert not box.lost
    finally:
        channel.close()


def test_cancel_flags_the_running_experiment_at_once(hub: Hub) -> None:
    box = hub.attach("w-c")
    channel = WorkerChannel(hub.endpoint, "w-c", heartbeat_interval_s=0.2, curve=hub.worker_keys)
    channel.start(_hello("w-c"))
    try:
        _collect(box, Hello)
        channel.busy_experiment_id = "e7"
        hub.send("w-c", Cancel(experiment_id="other"))
        hub.send("w-c", Cancel(experiment_id="e7"))
        assert channel.cancel_requested.wait(5)
    finally:
        channel.close()


def test_send_to_unknown_worker_reports_false(hub: Hub) -> None:
    assert hub.send("nobody", Accept(heartbeat_interval_s=1, coordinator_timeout_s=1)) is False


def test_sends_from_many_threads_all_arrive(hub: Hub) -> None:
    box = hub.attach("w-many")
    channel = WorkerChannel(hub.endpoint, "w-many", heartbeat_interval_s=0.2, curve=hub.worker_keys)
    channel.start(_hello("w-many"))
    try:
        _collect(box, Hello)
        sent: list[bool] = []

        def ping(first: int) -> None:
            sent.extend(
                hub.send("w-many", Ping(seq=s, payload=b"")) for s in range(first, first + 50)
            )

        threads = [threading.Thread(target=ping, args=(i * 50,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sent == [True] * 200
        seqs: set[int] = set()
        while len(seqs) < 200:
            pong = _collect(box, Pong)
            assert isinstance(pong, Pong)
            seqs.add(pong.seq)
        assert seqs == set(range(200))
    finally:
        channel.close()


def test_coordinator_heartbeats_go_out_and_a_silent_worker_is_lost(
    hub: Hub, dealer: zmq.Context[zmq.Socket[bytes]]
) -> None:
    box = hub.attach("w-raw", heartbeat_interval_s=0.1, heartbeat_timeout_s=0.6)
    sock = _raw_worker(dealer, hub, "w-raw")
    beats = 0
    deadline = time.monotonic() + 5
    while beats < 3 and time.monotonic() < deadline:
        if sock.poll(500):
            beats += isinstance(decode_command(sock.recv()), CoordinatorHeartbeat)
    assert beats == 3
    assert isinstance(_collect(box, Hello), Hello)
    started = time.monotonic()
    lost = box.get(5.0)  # it never sends a heartbeat
    assert lost == Lost("worker w-raw sent no heartbeat for 0.6 s and was killed")
    assert time.monotonic() - started < 2.0
    assert box.get(0) == lost and box.wait_lost(0)  # Lost stays at the end


def test_a_watched_process_that_dies_ends_its_mailbox_at_once(hub: Hub) -> None:
    box = hub.attach("w-proc")
    process = LocalProcess(subprocess.Popen(["sleep", "30"]))
    hub.watch("w-proc", process)
    process.kill()
    started = time.monotonic()
    lost = box.get(10.0)
    assert isinstance(lost, Lost) and time.monotonic() - started < 2.0
    assert lost.reason == f"worker w-proc (pid {process.pid}) died: killed by SIGKILL"
    assert process.sentinel_fd() is None  # the hub released the pidfd


def test_an_expected_exit_is_recorded_as_stopped(hub: Hub) -> None:
    box = hub.attach("w-bye")
    process = LocalProcess(subprocess.Popen(["sleep", "30"]))
    hub.watch("w-bye", process)
    box.expect_exit()
    process.terminate()
    assert box.get(10.0) == Lost("stopped (killed by SIGTERM)")


def test_frames_from_unknown_peers_are_dropped_with_a_log_line(
    hub: Hub, dealer: zmq.Context[zmq.Socket[bytes]]
) -> None:
    box = hub.attach("w-known")
    with capture_logs() as logs:
        stranger = _raw_worker(dealer, hub, "w-stranger")
        stranger.send(encode(Progress(worker_id="w-stranger", experiment_id="e", phase="warmup")))
        _raw_worker(dealer, hub, "w-known")
        assert isinstance(_collect(box, Hello), Hello)
        deadline = time.monotonic() + 5
        while not any(e.get("peer") == "w-stranger" for e in logs):
            assert time.monotonic() < deadline, logs
            time.sleep(0.02)
    dropped = [e for e in logs if e["event"] == "dropped a frame from an unknown peer"]
    assert [e["peer"] for e in dropped] == ["w-stranger"]  # logged once per peer
    assert box.get(0.2) is None  # nothing of the stranger's came to another mailbox


def test_close_ends_waiters_and_leaves_no_thread_socket_or_directory() -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = len(_hub_threads())
    hub = Hub()
    assert len(_hub_threads()) == threads_before + 1
    ipc_dir = Path(hub.endpoint.removeprefix("ipc://")).parent
    box = hub.attach("w-wait")
    process = LocalProcess(subprocess.Popen(["sleep", "30"]))
    hub.watch("w-wait", process)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(box.get(30.0)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    hub.close()
    waiter.join(5)
    assert got == [Lost("the coordinator's hub closed")] and time.monotonic() - started < 5
    assert len(_hub_threads()) == threads_before and not hub.running
    assert not ipc_dir.exists()
    assert process.sentinel_fd() is None
    process.kill()
    process.wait(5)
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # no socket, pipe or pidfd left
    assert hub.send("w-wait", Ping(seq=1, payload=b"")) is False
    with pytest.raises(HubClosed, match="closed"):
        hub.attach("w-late")
    hub.detach("w-wait")  # harmless once closed
    hub.close()  # and so is a second close


class _BrokenProcess:
    """A process whose exit status cannot be read: the I/O thread's check raises."""

    pid = 0

    def sentinel_fd(self) -> int | None:
        return None

    def returncode(self) -> int | None:
        raise RuntimeError("no status")

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout_s: float) -> int | None:
        return None

    def release(self) -> None: ...


def test_an_error_in_the_io_thread_ends_every_mailbox_and_the_thread() -> None:
    threads_before = len(_hub_threads())
    hub = Hub()
    try:
        other = hub.attach("w-other")
        box = hub.attach("w-broken")
        with capture_logs() as logs:
            hub.watch("w-broken", _BrokenProcess())
            lost = box.get(5.0)
        assert isinstance(lost, Lost)
        assert lost.reason == "the coordinator's hub failed: RuntimeError: no status"
        assert other.get(1.0) == lost
        assert any(e["event"] == "hub I/O thread failed" for e in logs)
        deadline = time.monotonic() + 5
        while len(_hub_threads()) > threads_before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not hub.running
        with pytest.raises(HubClosed, match="RuntimeError: no status"):
            hub.attach("w-late")
        assert hub.send("w-other", Ping(seq=1, payload=b"")) is False
    finally:
        hub.close()
