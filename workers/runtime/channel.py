"""The worker's end of the transport: a DEALER socket served by its own I/O thread.

The compute thread never touches the DEALER. It sends events through an inproc PAIR
socket and receives commands from a ``queue.Queue``; the I/O thread blocks in
``zmq.Poller.poll`` on both sockets (no busy-waiting), sends heartbeats, answers pings,
flags cancellations at once, and ends the process if the coordinator falls silent for
longer than its deadline — so a worker never outlives its coordinator.

Over tcp:// the DEALER is a CurveZMQ client with the keys its launcher handed over
(``protocol/curve.py``); a tcp:// endpoint without them is refused (``CurveError``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

import zmq

from lem.protocol.codec import ProtocolError, decode_command, encode
from lem.protocol.curve import CurveError, CurveKeys, is_tcp
from lem.protocol.messages import (
    Accept,
    Cancel,
    Command,
    CoordinatorHeartbeat,
    Event,
    Go,
    Heartbeat,
    Ping,
    Pong,
)

log = logging.getLogger("lem.worker.channel")

EXIT_COORDINATOR_LOST = 3


class WorkerChannel:
    """Connects to the coordinator's ROUTER as ``worker_id`` and runs the I/O thread;
    with ``curve``, as a CurveZMQ client (required for tcp://)."""

    def __init__(
        self,
        endpoint: str,
        worker_id: str,
        heartbeat_interval_s: float = 1.0,
        curve: CurveKeys | None = None,
    ) -> None:
        if curve is None and is_tcp(endpoint):
            raise CurveError(
                f"refusing {endpoint}: a tcp:// endpoint needs the campaign's CURVE keys, "
                "which the coordinator's launcher sets in the worker's environment"
            )
        self.worker_id = worker_id
        self.commands: queue.Queue[Command] = queue.Queue()
        self.cancel_requested = threading.Event()
        self.go_requested = threading.Event()  # Go for the busy experiment (start barrier)
        self.busy_experiment_id: str | None = None
        self._heartbeat_interval_s = heartbeat_interval_s
        self._coordinator_timeout_s: float | None = None
        self._last_heard_s = time.monotonic()
        self._ctx = zmq.Context()
        self._inproc = f"inproc://lem-worker-outbox-{id(self)}"
        self._outbox_rx = self._ctx.socket(zmq.PAIR)
        self._outbox_rx.bind(self._inproc)
        self._outbox_tx = self._ctx.socket(zmq.PAIR)
        self._outbox_tx.connect(self._inproc)
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.IDENTITY, worker_id.encode())
        self._dealer.setsockopt(zmq.LINGER, 2000)
        if curve is not None:
            curve.apply(self._dealer)
        self._dealer.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="lem-worker-io", daemon=True)

    def start(self, hello: Event) -> None:
        """Send the hello (always the first message) and start the I/O thread."""
        self._dealer.send(encode(hello))
        self._thread.start()

    def send(self, event: Event) -> None:
        """Queue an event for the coordinator. Call from the compute thread only."""
        self._outbox_tx.send(encode(event))

    def close(self) -> None:
        """Flush what was sent, stop the I/O thread and close the sockets."""
        self._stop.set()
        self._outbox_tx.send(b"")  # wake the I/O thread
        self._thread.join(timeout=5)
        self._outbox_tx.close(linger=0)
        self._outbox_rx.close(linger=0)
        self._dealer.close(linger=2000)
        self._ctx.term()

    # ---- I/O thread -------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._dealer, zmq.POLLIN)
        poller.register(self._outbox_rx, zmq.POLLIN)
        next_heartbeat_s = time.monotonic() + self._heartbeat_interval_s
        while not self._stop.is_set():
            timeout_ms = max(0.0, next_heartbeat_s - time.monotonic()) * 1000
            ready = dict(poller.poll(int(timeout_ms)))
            if self._outbox_rx in ready:
                self._forward_outbox()
            if self._dealer in ready:
                self._receive()
            now = time.monotonic()
            if now >= next_heartbeat_s:
                self._send_heartbeat()
                next_heartbeat_s = now + self._heartbeat_interval_s
            self._check_coordinator(now)
        self._forward_outbox()

    def _forward_outbox(self) -> None:
        while True:
            try:
                frame = self._outbox_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame:
                self._dealer.send(frame)

    def _receive(self) -> None:
        while True:
            try:
                frame = self._dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_heard_s = time.monotonic()
            try:
                command = decode_command(frame)
            except ProtocolError as exc:
                log.error("dropping undecodable command: %s", exc)
                continue
            if isinstance(command, CoordinatorHeartbeat):
                continue
            if isinstance(command, Ping):
                self._dealer.send(encode(Pong(seq=command.seq, payload=command.payload)))
                continue
            if isinstance(command, Accept):
                self._coordinator_timeout_s = command.coordinator_timeout_s
                self._heartbeat_interval_s = command.heartbeat_interval_s
            if isinstance(command, Cancel) and command.experiment_id == self.busy_experiment_id:
                self.cancel_requested.set()
            if isinstance(command, Go):
                if command.experiment_id == self.busy_experiment_id:
                    self.go_requested.set()
                continue  # only the window's barrier reads it
            self.commands.put(command)

    def _send_heartbeat(self) -> None:
        beat = Heartbeat(
            worker_id=self.worker_id,
            sent_at_unix_s=time.time(),
            busy_experiment_id=self.busy_experiment_id,
        )
        self._dealer.send(encode(beat))

    def _check_coordinator(self, now_s: float) -> None:
        timeout_s = self._coordinator_timeout_s
        if timeout_s is not None and now_s - self._last_heard_s > timeout_s:
            log.error(
                "coordinator silent for %.1f s (deadline %.1f s): exiting",
                now_s - self._last_heard_s,
                timeout_s,
            )
            os._exit(EXIT_COORDINATOR_LOST)
