"""Supervising workers: handshake, heartbeats, death detection, running experiments.

One event loop (``_pump``) serves every worker: it blocks on the hub (messages and
process sentinels), sends the coordinator's heartbeats when due and enforces each
worker's heartbeat deadline. Events are queued per worker and consumed by whoever waits
for that worker. Parallel lanes share one Supervisor from several threads: every use of
the hub holds ``access`` (hub_access.py), and ``poll_slice_s`` bounds how long one pump
holds it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import structlog

from lem.coordinator.execution.hub import Exited, Garbled, Hub, Received
from lem.coordinator.execution.hub_access import HubAccess
from lem.coordinator.execution.launcher import (
    WorkerLauncher,
    WorkerProcess,
    WorkerSpec,
    describe_exit,
)
from lem.protocol.codec import VersionMismatch, check_version
from lem.protocol.errors import LemError
from lem.protocol.messages import (
    Accept,
    Cancel,
    Command,
    CoordinatorHeartbeat,
    Error,
    Event,
    Heartbeat,
    Hello,
    Progress,
    Ready,
    Refuse,
    Result,
    Run,
    Shutdown,
)
from lem.protocol.results import Environment, Measurement

log = structlog.get_logger("lem.supervisor")


class WorkerStartError(LemError):
    """A worker did not complete its handshake; ``str`` says what to check."""


@dataclass
class WorkerHandle:
    spec: WorkerSpec
    process: WorkerProcess
    hello: Hello | None = None
    environment: Environment | None = None
    alive: bool = True
    death_reason: str | None = None
    last_heard_s: float = field(default_factory=time.monotonic)
    running_experiment_id: str | None = None
    inbox: collections.deque[Event] = field(default_factory=collections.deque)


@dataclass(frozen=True)
class Failure:
    """An experiment cycle that produced no measurement, and why.

    ``retryable``: the worker died or hung, or the cycle ran past its ``timeout_s`` — a
    fresh attempt may succeed. An error the worker reported (a bad model path, say) is not.
    """

    reason: str
    worker_died: bool
    timed_out: bool = False

    @property
    def retryable(self) -> bool:
        return self.worker_died or self.timed_out


Outcome: TypeAlias = Measurement | Failure
ProgressCallback = Callable[[Progress], None]


class Supervisor:
    """Starts and watches workers. Times in seconds."""

    def __init__(
        self,
        hub: Hub,
        launcher: WorkerLauncher,
        heartbeat_interval_s: float = 1.0,
        heartbeat_timeout_s: float = 10.0,
        handshake_timeout_s: float = 60.0,
        orphan_timeout_s: float = 120.0,
        cancel_grace_s: float = 10.0,
    ) -> None:
        self.hub = hub
        self.launcher = launcher
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.orphan_timeout_s = orphan_timeout_s
        self.cancel_grace_s = cancel_grace_s  # a timed-out worker's time to answer Cancel
        self.workers: dict[str, WorkerHandle] = {}
        self._next_heartbeat_s = time.monotonic()
        self.access = HubAccess()
        # None: one thread, polls block until the next heartbeat (as before lanes); several
        # lanes set a short slice (s) so that a lane that must send waits at most that.
        self.poll_slice_s: float | None = None
        self.closing = False  # set by stop_all

    def _send(self, worker_id: str, command: Command) -> bool:
        with self.access.exclusive():
            return self.hub.send(worker_id, command)

    def send(self, handle: WorkerHandle, command: Command) -> bool:
        """Send ``command`` to a live worker from any thread; False if it was not sent."""
        return handle.alive and self._send(handle.spec.worker_id, command)

    # ---- lifecycle ----------------------------------------------------------------

    def start_worker(self, spec: WorkerSpec) -> WorkerHandle:
        """Launch a worker and complete the handshake (hello → accept → ready)."""
        if self.closing:
            raise WorkerStartError(f"worker {spec.worker_id} not started: stopping")
        process = self.launcher.launch(spec)
        handle = WorkerHandle(spec=spec, process=process)
        self.workers[spec.worker_id] = handle
        sentinel = process.sentinel_fd()
        if sentinel is not None:
            with self.access.exclusive():
                self.hub.watch(spec.worker_id, sentinel)
        deadline_s = time.monotonic() + self.handshake_timeout_s
        hello = self._await(handle, (Hello,), deadline_s, "say hello")
        assert isinstance(hello, Hello)
        try:
            check_version(hello.protocol_version, f"worker {spec.worker_id}")
        except VersionMismatch as exc:
            self._send(spec.worker_id, Refuse(reason=str(exc)))
            self._reap(handle, grace_s=5.0)
            raise WorkerStartError(str(exc)) from exc
        handle.hello = hello
        self._send(
            spec.worker_id,
            Accept(
                heartbeat_interval_s=self.heartbeat_interval_s,
                coordinator_timeout_s=self.orphan_timeout_s,
            ),
        )
        ready = self._await(handle, (Ready,), deadline_s, "become ready")
        assert isinstance(ready, Ready)
        handle.environment = ready.environment
        log.info(
            "worker ready",
            worker=spec.worker_id,
            pid=process.pid,
            init_s=round(ready.init_duration_s, 2),
        )
        return handle

    def stop_worker(self, handle: WorkerHandle, reason: str, grace_s: float = 10.0) -> None:
        """Ask a worker to shut down; kill it if it has not exited after ``grace_s``.

        A busy worker is first told to cancel, which its I/O thread flags at once, so the
        experiment stops at the next batch boundary instead of running to its end.
        """
        if handle.alive:
            if handle.running_experiment_id is not None:
                self._send(
                    handle.spec.worker_id, Cancel(experiment_id=handle.running_experiment_id)
                )
            self._send(handle.spec.worker_id, Shutdown(reason=reason))
        self._reap(handle, grace_s)

    def stop_all(self, reason: str, grace_s: float = 10.0) -> None:
        """Stop every worker; from now on no worker starts and no experiment is sent."""
        self.closing = True
        for handle in list(self.workers.values()):
            self.stop_worker(handle, reason, grace_s)

    def _reap(self, handle: WorkerHandle, grace_s: float) -> None:
        if handle.process.wait(grace_s) is None:
            handle.process.kill()
            handle.process.wait(5.0)
        self._mark_dead(handle, f"stopped ({describe_exit(handle.process.returncode())})")
        self._release(handle)
        self.workers.pop(handle.spec.worker_id, None)

    def _release(self, handle: WorkerHandle) -> None:
        with self.access.exclusive():
            sentinel = handle.process.sentinel_fd()
            if sentinel is not None:
                self.hub.unwatch(sentinel)
            handle.process.release()

    # ---- experiments --------------------------------------------------------------

    def run(
        self, handle: WorkerHandle, command: Run, on_progress: ProgressCallback | None = None
    ) -> Outcome:
        """Send ``command`` and wait for its result, an error, death or the timeout."""
        wid = handle.spec.worker_id
        if self.closing:
            return Failure(f"not sent to worker {wid}: stopping", False)
        if not handle.alive or not self._send(wid, command):
            if handle.alive:  # not connected any more: let its sentinel or heartbeat explain
                self._pump(1.0)
            reason = handle.death_reason or describe_exit(handle.process.returncode())
            return Failure(f"worker {wid} is not reachable: {reason}", True)
        deadline_s = time.monotonic() + command.config.timeout_s
        handle.running_experiment_id = command.experiment_id
        outcome = self._await_outcome(handle, command, deadline_s, on_progress)
        handle.running_experiment_id = None  # kept if interrupted: stop_worker cancels it
        return outcome

    def _await_outcome(
        self,
        handle: WorkerHandle,
        command: Run,
        deadline_s: float,
        on_progress: ProgressCallback | None,
    ) -> Outcome:
        wid = handle.spec.worker_id
        while True:
            event = self._next_event(handle, deadline_s)
            if event is None:
                if not handle.alive:
                    return Failure(handle.death_reason or f"worker {wid} died", True)
                return self._time_out(handle, command)
            if isinstance(event, Progress) and on_progress is not None:
                on_progress(event)
            elif (
                isinstance(event, Result)
                and event.measurement.experiment_id == command.experiment_id
            ):
                return event.measurement
            elif isinstance(event, Error) and event.experiment_id in (command.experiment_id, None):
                reason = f"{event.kind}: {event.message}"
                if event.fatal:
                    self._reap(handle, grace_s=5.0)
                return Failure(reason, event.fatal)

    def _time_out(self, handle: WorkerHandle, command: Run) -> Failure:
        self._send(handle.spec.worker_id, Cancel(experiment_id=command.experiment_id))
        grace_deadline_s = time.monotonic() + self.cancel_grace_s
        while (event := self._next_event(handle, grace_deadline_s)) is not None:
            if isinstance(event, Error | Result):
                break
        else:
            handle.process.kill()
            self._reap(handle, grace_s=5.0)
        return Failure(
            f"timed out after {command.config.timeout_s:g} s", not handle.alive, timed_out=True
        )

    # ---- the event loop -----------------------------------------------------------

    def _await(
        self, handle: WorkerHandle, kinds: tuple[type, ...], deadline_s: float, what: str
    ) -> Event:
        while True:
            event = self._next_event(handle, deadline_s)
            if event is None:
                self._fail_start(handle, what)
            elif isinstance(event, kinds):
                return event
            elif isinstance(event, Error):
                self._reap(handle, grace_s=5.0)
                raise WorkerStartError(
                    f"worker {handle.spec.worker_id} failed to start: {event.kind}: "
                    f"{event.message} (log: {handle.spec.log_path})"
                )

    def _fail_start(self, handle: WorkerHandle, what: str) -> None:
        spec = handle.spec
        state = (
            "died" if not handle.alive else f"did not {what} within {self.handshake_timeout_s:g} s"
        )
        if handle.alive:
            handle.process.kill()
        self._reap(handle, grace_s=5.0)
        raise WorkerStartError(
            f"worker {spec.worker_id} ({describe_exit(handle.process.returncode())}) {state} on "
            f"{spec.endpoint}: check that its Python can `import lem.workers` with pyzmq and "
            f"msgspec installed, and read its log {spec.log_path}"
        )

    def _next_event(self, handle: WorkerHandle, deadline_s: float) -> Event | None:
        """The worker's next event, or None at the deadline or when it has died."""
        while not handle.inbox:
            if not handle.alive:
                return None
            now_s = time.monotonic()
            if now_s >= deadline_s:
                return None
            if not self.access.try_pump(min(deadline_s - now_s, self.poll_slice_s or 0.05)):
                continue  # another lane pumped (and filed our events): look again
            try:
                timeout_s = min(deadline_s, self._next_heartbeat_s) - now_s
                self._pump(min(timeout_s, self.poll_slice_s or timeout_s))
            finally:
                self.access.release_pump()
        return handle.inbox.popleft()

    def pump(self, timeout_s: float) -> None:
        """Serve heartbeats and liveness for up to ``timeout_s`` while the caller waits on
        something else (the coordinator's heartbeats stop if nobody pumps)."""
        with self.access.exclusive():
            self._pump(timeout_s)

    def _pump(self, timeout_s: float) -> None:
        for item in self.hub.poll(timeout_s):
            handle = self.workers.get(item.worker_id)
            if handle is None:
                continue
            if isinstance(item, Exited):
                handle.process.wait(1.0)
                self._mark_dead(
                    handle,
                    f"worker {item.worker_id} (pid {handle.process.pid}) died: "
                    f"{describe_exit(handle.process.returncode())}",
                )
            elif isinstance(item, Garbled):
                log.warning("garbled frame", worker=item.worker_id, problem=item.problem)
            elif isinstance(item, Received):
                handle.last_heard_s = time.monotonic()
                if not isinstance(item.event, Heartbeat):
                    handle.inbox.append(item.event)
        now_s = time.monotonic()
        if now_s >= self._next_heartbeat_s:
            for wid, handle in list(self.workers.items()):
                if handle.alive:
                    self._send(wid, CoordinatorHeartbeat(sent_at_unix_s=time.time()))
            self._next_heartbeat_s = now_s + self.heartbeat_interval_s
        for handle in list(self.workers.values()):
            self._check_liveness(handle, now_s)

    def _check_liveness(self, handle: WorkerHandle, now_s: float) -> None:
        if not handle.alive:
            return
        code = handle.process.returncode()
        if code is not None:  # no pidfd on this platform, or the exit raced the poll
            self._mark_dead(
                handle,
                f"worker {handle.spec.worker_id} (pid {handle.process.pid}) died: "
                f"{describe_exit(code)}",
            )
        elif handle.hello is not None and now_s - handle.last_heard_s > self.heartbeat_timeout_s:
            handle.process.kill()
            handle.process.wait(5.0)
            self._mark_dead(
                handle,
                f"worker {handle.spec.worker_id} sent no heartbeat for "
                f"{self.heartbeat_timeout_s:g} s and was killed",
            )

    def _mark_dead(self, handle: WorkerHandle, reason: str) -> None:
        with self.access.exclusive():
            self._mark_dead_locked(handle, reason)

    def _mark_dead_locked(self, handle: WorkerHandle, reason: str) -> None:
        if handle.alive:
            handle.alive = False
            handle.death_reason = reason
            self._release(handle)
            if reason.startswith("stopped"):
                log.debug("worker stopped", worker=handle.spec.worker_id, reason=reason)
            else:
                log.warning("worker lost", worker=handle.spec.worker_id, reason=reason)
