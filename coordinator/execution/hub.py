"""The coordinator's end of the transport: one ROUTER socket, owned by one I/O thread.

Workers connect DEALER sockets whose identity is their worker id. ZeroMQ sockets are not
thread-safe, so only the hub's I/O thread (``lem-hub-io``) touches the ROUTER. It blocks in
``zmq.Poller`` on the ROUTER, on a wake-up pipe and on every watched worker's pidfd (Linux),
so a message, a request from another thread and a worker's death wake it alike — no
busy-waiting. Other threads ask it to ``attach``, ``watch``, ``send`` and ``detach``
through a queue (each waits for the answer) and wait on their worker's ``Mailbox``.

For each attached worker the I/O thread decodes its events into its mailbox, in order
(heartbeats only refresh its liveness); sends it the coordinator's heartbeat every
``heartbeat_interval_s``; and ends its mailbox with ``Lost`` when its process exits (the
pidfd, or its exit status where there is none) or, once it has spoken, when it is silent
for longer than ``heartbeat_timeout_s`` (the process is then killed). Frames from peers
that are not attached are dropped with a log line. On a tcp:// endpoint the ROUTER is a
CurveZMQ server admitting only the campaign's worker key (``curve.py``; the I/O thread
answers its ZAP requests too): an unauthenticated peer's frames never reach the ROUTER.
``close`` — or an error in the thread — ends every mailbox, and the thread closes the
sockets and releases the pidfds on its way out.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import structlog
import zmq

from lem.coordinator.execution.curve import CurveServer
from lem.coordinator.execution.launcher import WorkerProcess, describe_exit
from lem.coordinator.execution.mailbox import Mailbox
from lem.protocol.codec import ProtocolError, decode_event, encode
from lem.protocol.curve import CurveError, CurveKeys, is_tcp
from lem.protocol.errors import LemError
from lem.protocol.messages import Command, CoordinatorHeartbeat, Error, Heartbeat

log = structlog.get_logger("lem.hub")

ANSWER_TIMEOUT_S = 10.0  # how long a caller waits for the I/O thread to take its request
ANSWER_SLICE_S = 0.2  # how often a waiting caller checks that the I/O thread still runs
IDLE_WAKE_S = 1.0  # the I/O thread looks at exit statuses at least this often


class HubClosed(LemError):
    """The hub is closed, or its I/O thread failed; ``str`` says which."""


def local_endpoint() -> tuple[str, Path]:
    """A fresh ipc:// endpoint in a private temporary directory (removed on close)."""
    directory = Path(tempfile.mkdtemp(prefix="lem-"))
    return f"ipc://{directory}/coordinator.sock", directory


class Hub:
    """Binds the ROUTER and starts the I/O thread. ``endpoint`` may be ipc://… or
    tcp://host:port (port ``*`` picks; CurveZMQ, ``CurveError`` where libzmq lacks it).
    Times in seconds."""

    def __init__(self, endpoint: str | None = None) -> None:
        self._ipc_dir: Path | None = None
        if endpoint is None:
            endpoint, self._ipc_dir = local_endpoint()
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.LINGER, 0)
        self._curve: CurveServer | None = None
        try:
            if is_tcp(endpoint):
                self._curve = CurveServer(self._ctx)
                self._curve.secure(self._router)
            self._router.bind(endpoint)
        except (zmq.ZMQError, CurveError):
            if self._curve is not None:
                self._curve.close()
            self._router.close(linger=0)
            self._ctx.term()
            if self._ipc_dir is not None:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)
            raise
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_lock = threading.Lock()  # no wake-up write once ``close`` closed the pipe
        self._closed = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        if self._curve is not None:
            self._poller.register(self._curve.zap, zmq.POLLIN)
        self.frames_received = 0  # frames read off the ROUTER, before decoding
        # The I/O thread's own state: only that thread reads or writes these.
        self._mailboxes: dict[str, Mailbox] = {}
        self._sentinels: dict[int, Mailbox] = {}
        self._retired: set[str] = set()  # detached ids: their late frames are expected
        self._strangers: set[str] = set()  # unknown ids already logged
        self._stopping = False
        self._failure: str | None = None  # why the I/O thread ended, once it has
        self._thread = threading.Thread(target=self._serve, name="lem-hub-io", daemon=True)
        self._thread.start()

    # ---- any thread ---------------------------------------------------------------

    def attach(
        self, worker_id: str, heartbeat_interval_s: float = 1.0, heartbeat_timeout_s: float = 10.0
    ) -> Mailbox:
        """Accept ``worker_id``'s frames from now on, into the returned mailbox, and send it
        heartbeats. Attach before the worker starts: frames of unknown peers are dropped."""
        box = Mailbox(worker_id, heartbeat_interval_s, heartbeat_timeout_s)

        def attach() -> Mailbox:
            if worker_id in self._mailboxes:
                raise ValueError(f"worker {worker_id} is already attached")
            self._retired.discard(worker_id)
            self._mailboxes[worker_id] = box
            return box

        result: Mailbox = self._call(attach)
        return result

    def watch(self, worker_id: str, process: WorkerProcess) -> None:
        """Watch the attached worker's process: its exit ends the mailbox at once (pidfd)."""

        def watch() -> None:
            box = self._mailboxes[worker_id]
            box.process = process
            fd = process.sentinel_fd()
            if fd is not None:
                self._sentinels[fd] = box
                self._poller.register(fd, zmq.POLLIN)

        self._call(watch)

    def detach(self, worker_id: str) -> None:
        """Forget the worker: its mailbox ends, its pidfd is released, its frames dropped."""
        with contextlib.suppress(HubClosed):  # closed: the I/O thread released everything
            self._call(lambda: self._forget(worker_id, "detached"))

    def send(self, worker_id: str, command: Command) -> bool:
        """Send to a connected worker; False if no such peer is connected or the hub is
        closed."""
        try:
            sent: bool = self._call(lambda: self._send(worker_id, command))
        except HubClosed:
            return False
        return sent

    def close(self) -> None:
        """Stop the I/O thread (it ends every mailbox, closes the socket and releases the
        pidfds), then end the context and remove the ipc:// directory."""
        if self._closed:
            return
        self._stopping = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(ANSWER_TIMEOUT_S)
        if self._thread.is_alive():  # never seen; leak the context rather than hang in term
            log.error("hub I/O thread did not stop", timeout_s=ANSWER_TIMEOUT_S)
            return
        self._fail_requests()
        with self._pipe_lock:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
        self._ctx.term()
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    @property
    def worker_keys(self) -> CurveKeys | None:
        """What a worker needs to connect (a launcher hands it over); None on ipc://."""
        return None if self._curve is None else self._curve.worker_keys

    @property
    def curve_public_key(self) -> str | None:
        """The hub's CurveZMQ public key (Z85) on tcp://; None on ipc://."""
        return None if self._curve is None else self._curve.public_key

    @property
    def peers_refused(self) -> int:
        """Peers the ZAP handler refused (a peer without CURVE fails before it)."""
        return 0 if self._curve is None else self._curve.refused

    @property
    def running(self) -> bool:
        """Whether the I/O thread is serving (False once closed or failed)."""
        return self._thread.is_alive() and self._failure is None

    def _call(self, request: Callable[[], Any]) -> Any:
        """Run ``request`` on the I/O thread and return its result (or raise its error)."""
        if self._failure is not None or self._stopping:
            raise HubClosed(self._failure or "the hub is closed")
        if threading.current_thread() is self._thread:
            return request()
        future: Future[Any] = Future()
        self._requests.put((request, future))
        self._wake()
        deadline_s = time.monotonic() + ANSWER_TIMEOUT_S
        while time.monotonic() < deadline_s:
            try:
                return future.result(ANSWER_SLICE_S)
            except TimeoutError:
                if not self._thread.is_alive():  # it ended before it took this request
                    break
        raise HubClosed(self._failure or "the hub's I/O thread did not answer")

    def _wake(self) -> None:
        with self._pipe_lock, contextlib.suppress(BlockingIOError):  # full: it wakes anyway
            if not self._closed:
                os.write(self._wake_w, b"\0")

    # ---- the I/O thread -----------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stopping:
                ready = dict(self._poller.poll(self._timeout_ms()))
                if self._wake_r in ready:
                    self._drain_wake_pipe()
                if self._curve is not None and self._curve.zap in ready:
                    self._curve.answer()
                self._run_requests()  # before reading: a worker attached now may speak next
                if self._router in ready:
                    self._receive()
                exited = [box for fd, box in self._sentinels.items() if fd in ready]
                now_s = time.monotonic()
                for box in list(self._mailboxes.values()):
                    self._check(box, now_s, box in exited)
        except BaseException as exc:  # a bug: waiters must not wait forever on a dead thread
            log.exception("hub I/O thread failed")
            self._failure = f"the coordinator's hub failed: {type(exc).__name__}: {exc}"
        finally:
            self._shut()

    def _timeout_ms(self) -> int:
        now_s = time.monotonic()
        wake_s = now_s + IDLE_WAKE_S
        for box in self._mailboxes.values():
            if box.lost:
                continue
            wake_s = min(wake_s, box.next_beat_s)
            if box.heard:
                wake_s = min(wake_s, box.last_heard_s + box.heartbeat_timeout_s)
        return max(0, int((wake_s - now_s) * 1000) + 1)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_requests(self) -> None:
        while True:
            try:
                request, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(request())
            except Exception as exc:  # the caller's mistake (say, a worker attached twice)
                future.set_exception(exc)

    def _send(self, worker_id: str, command: Command) -> bool:
        try:
            self._router.send_multipart([worker_id.encode(), encode(command)], zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH (ROUTER_MANDATORY) or EAGAIN
            return False
        return True

    def _receive(self) -> None:
        while True:
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.frames_received += 1
            if len(parts) != 2:
                log.warning("dropped a frame: not two parts")
                continue
            identity, frame = parts
            worker_id = identity.decode(errors="replace")
            box = self._mailboxes.get(worker_id)
            if box is None:
                self._drop_stranger(worker_id)
                continue
            try:
                event = decode_event(frame)
            except ProtocolError as exc:
                log.warning("garbled frame", worker=worker_id, problem=str(exc))
                continue
            box.heard = True
            box.last_heard_s = time.monotonic()
            if isinstance(event, Error) and event.fatal:
                box.expect_exit()  # it exits next: that is no loss
            if not isinstance(event, Heartbeat):
                box.put(event)

    def _drop_stranger(self, worker_id: str) -> None:
        if worker_id in self._retired:
            log.debug("dropped a frame from a detached worker", worker=worker_id)
        elif worker_id not in self._strangers:
            self._strangers.add(worker_id)  # logged once: a stranger may keep talking
            log.warning("dropped a frame from an unknown peer", peer=worker_id)

    def _check(self, box: Mailbox, now_s: float, exited: bool) -> None:
        """Heartbeat due, process exit, silence past the deadline: for one worker."""
        if box.lost:
            self._unwatch(box)
            return
        process = box.process
        code = None if process is None else process.returncode()
        if exited or code is not None:
            assert process is not None
            self._receive()  # what it sent before it died goes first
            code = process.wait(1.0)  # the pidfd is readable: it has exited
            self._unwatch(box)
            if box.exit_expected:
                if box.lose(f"stopped ({describe_exit(code)})"):
                    log.debug("worker stopped", worker=box.worker_id, reason=box.lost_reason)
            else:
                self._lose(box, f"worker {box.worker_id} (pid {process.pid}) died: "
                                f"{describe_exit(code)}")  # fmt: skip
        elif box.heard and now_s - box.last_heard_s > box.heartbeat_timeout_s:
            if process is not None:
                process.kill()  # reaped by whoever stops it: the thread does not wait
            self._lose(box, f"worker {box.worker_id} sent no heartbeat for "
                            f"{box.heartbeat_timeout_s:g} s and was killed")  # fmt: skip
        elif now_s >= box.next_beat_s:
            self._send(box.worker_id, CoordinatorHeartbeat(sent_at_unix_s=time.time()))
            box.next_beat_s = now_s + box.heartbeat_interval_s

    def _lose(self, box: Mailbox, reason: str) -> None:
        if box.lose(reason):
            log.warning("worker lost", worker=box.worker_id, reason=reason)

    def _unwatch(self, box: Mailbox) -> None:
        """Unregister and release the worker's pidfd (this thread polls it: it closes it)."""
        for fd, watched in list(self._sentinels.items()):
            if watched is box:
                del self._sentinels[fd]
                self._poller.unregister(fd)
        if box.process is not None:
            box.process.release()

    def _forget(self, worker_id: str, reason: str) -> None:
        box = self._mailboxes.pop(worker_id, None)
        if box is not None:
            box.lose(reason)
            self._unwatch(box)
            self._retired.add(worker_id)

    def _shut(self) -> None:
        """Leaving the thread: end every mailbox, release every pidfd, close the socket."""
        self._stopping = True
        reason = self._failure or "the coordinator's hub closed"
        for worker_id in list(self._mailboxes):
            try:
                self._forget(worker_id, reason)
            except Exception:
                log.exception("releasing a worker failed", worker=worker_id)
        self._fail_requests()
        self._router.close(linger=0)
        if self._curve is not None:
            self._curve.close()

    def _fail_requests(self) -> None:
        while True:
            try:
                _, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(HubClosed(self._failure or "the hub is closed"))
