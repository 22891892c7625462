"""The coordinator's end of the transport: one ROUTER socket, process sentinels, one poller.

Workers connect DEALER sockets whose identity is their worker id. ``poll`` blocks in
``zmq.Poller`` on the ROUTER and on every worker's pidfd (Linux), so a message and a
worker's death wake the coordinator alike — no busy-waiting.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq

from lem.protocol.codec import ProtocolError, decode_event, encode
from lem.protocol.messages import Command, Event


@dataclass(frozen=True)
class Received:
    """An event from a worker."""

    worker_id: str
    event: Event


@dataclass(frozen=True)
class Exited:
    """A watched worker process ended (its pidfd became readable)."""

    worker_id: str


@dataclass(frozen=True)
class Garbled:
    """A frame from a worker that is not a valid event."""

    worker_id: str
    problem: str


HubItem = Received | Exited | Garbled


def local_endpoint() -> tuple[str, Path]:
    """A fresh ipc:// endpoint in a private temporary directory (removed on close)."""
    directory = Path(tempfile.mkdtemp(prefix="lem-"))
    return f"ipc://{directory}/coordinator.sock", directory


class Hub:
    """Binds the ROUTER. ``endpoint`` may be ipc://… or tcp://host:port (port ``*`` picks)."""

    def __init__(self, endpoint: str | None = None) -> None:
        self._ipc_dir: Path | None = None
        if endpoint is None:
            endpoint, self._ipc_dir = local_endpoint()
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.bind(endpoint)
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._sentinels: dict[int, str] = {}

    def watch(self, worker_id: str, sentinel_fd: int) -> None:
        """Report ``Exited(worker_id)`` once the fd (a pidfd) becomes readable."""
        self._sentinels[sentinel_fd] = worker_id
        self._poller.register(sentinel_fd, zmq.POLLIN)

    def unwatch(self, sentinel_fd: int) -> None:
        if self._sentinels.pop(sentinel_fd, None) is not None:
            self._poller.unregister(sentinel_fd)

    def send(self, worker_id: str, command: Command) -> bool:
        """Send to a connected worker; False if no such peer is connected."""
        try:
            self._router.send_multipart([worker_id.encode(), encode(command)], zmq.NOBLOCK)
        except (zmq.error.ZMQError, zmq.Again):
            return False
        return True

    def poll(self, timeout_s: float) -> list[HubItem]:
        """Wait up to ``timeout_s`` for messages or exits; return all that are ready."""
        items: list[HubItem] = []
        ready = dict(self._poller.poll(int(max(0.0, timeout_s) * 1000)))
        for fd, worker_id in list(self._sentinels.items()):
            if fd in ready:
                items.append(Exited(worker_id))
                self.unwatch(fd)
        if self._router in ready:
            while True:
                try:
                    identity, frame = self._router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                except ValueError:
                    continue  # wrong frame count: not one of ours
                worker_id = identity.decode(errors="replace")
                try:
                    items.append(Received(worker_id, decode_event(frame)))
                except ProtocolError as exc:
                    items.append(Garbled(worker_id, str(exc)))
        return items

    def close(self) -> None:
        for fd in list(self._sentinels):
            self.unwatch(fd)
        self._router.close(linger=0)
        self._ctx.term()
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
