"""Supervising workers: handshake, running experiments, stopping, death and hangs.

The hub's I/O thread (hub.py) does the transport's part for every worker: it files each
worker's events into that worker's mailbox, sends the coordinator's heartbeats, and ends a
mailbox with ``Lost`` when its worker's process exits or the worker falls silent past the
heartbeat deadline. Whoever waits for a worker — the main thread, a parallel lane, a
data-parallel shard thread — waits on that worker's mailbox with its deadline, so threads
never take turns and a lane that sends never waits for another one's receive.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import structlog

from lem.coordinator.execution.hub import Hub, HubClosed
from lem.coordinator.execution.interrupts import CHECK_SLICE_S, raise_if_interrupted
from lem.coordinator.execution.launcher import (
    WorkerLauncher,
    WorkerProcess,
    WorkerSpec,
    describe_exit,
)
from lem.coordinator.execution.mailbox import Lost, Mailbox
from lem.protocol.codec import VersionMismatch, check_version
from lem.protocol.errors import LemError
from lem.protocol.messages import (
    Accept,
    Cancel,
    Command,
    Error,
    Event,
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
    mailbox: Mailbox
    hello: Hello | None = None
    environment: Environment | None = None
    running_experiment_id: str | None = None

    @property
    def alive(self) -> bool:
        return not self.mailbox.lost

    @property
    def death_reason(self) -> str | None:
        return self.mailbox.lost_reason


@dataclass(frozen=True)
class Failure:
    """An experiment cycle that produced no measurement, and why.

    ``retryable``: the worker died or hung, the cycle ran past its ``timeout_s``, or the
    worker said a fresh attempt may succeed (``Error.retryable``: a server that did not
    start). Any other error the worker reported (a bad model path, say) is not.
    """

    reason: str
    worker_died: bool
    timed_out: bool = False
    transient: bool = False  # the worker's ``Error.retryable``

    @property
    def retryable(self) -> bool:
        return self.worker_died or self.timed_out or self.transient


Outcome: TypeAlias = Measurement | Failure
ProgressCallback = Callable[[Progress], None]


class Supervisor:
    """Starts and watches workers; any thread may use it. Times in seconds."""

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
        self.closing = False  # set by stop_all

    def _send(self, worker_id: str, command: Command) -> bool:
        return self.hub.send(worker_id, command)

    def send(self, handle: WorkerHandle, command: Command) -> bool:
        """Send ``command`` to a live worker from any thread; False if it was not sent."""
        return handle.alive and self._send(handle.spec.worker_id, command)

    # ---- lifecycle ----------------------------------------------------------------

    def start_worker(self, spec: WorkerSpec) -> WorkerHandle:
        """Launch a worker and complete the handshake (hello → accept → ready)."""
        if self.closing:
            raise WorkerStartError(f"worker {spec.worker_id} not started: stopping")
        try:  # before the launch: the hub drops frames of workers it does not know
            mailbox = self.hub.attach(
                spec.worker_id, self.heartbeat_interval_s, self.heartbeat_timeout_s
            )
        except HubClosed as exc:
            raise WorkerStartError(f"worker {spec.worker_id} not started: {exc}") from exc
        try:
            process = self.launcher.launch(spec)
        except BaseException:
            self.hub.detach(spec.worker_id)
            raise
        handle = WorkerHandle(spec=spec, process=process, mailbox=mailbox)
        self.workers[spec.worker_id] = handle
        with contextlib.suppress(HubClosed):  # its mailbox has ended: the handshake says so
            self.hub.watch(spec.worker_id, process)
        deadline_s = time.monotonic() + self.handshake_timeout_s
        hello = self._await(handle, (Hello,), deadline_s, "say hello")
        assert isinstance(hello, Hello)
        try:
            check_version(hello.protocol_version, f"worker {spec.worker_id}")
        except VersionMismatch as exc:
            handle.mailbox.expect_exit()
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
        handle.mailbox.expect_exit()
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
        handle.mailbox.expect_exit()
        if handle.process.wait(grace_s) is None:
            handle.process.kill()
            handle.process.wait(5.0)
        self._mark_dead(handle, f"stopped ({describe_exit(handle.process.returncode())})")
        self.hub.detach(handle.spec.worker_id)  # releases its pidfd
        self.workers.pop(handle.spec.worker_id, None)

    def _mark_dead(self, handle: WorkerHandle, reason: str) -> None:
        if handle.mailbox.lose(reason):  # the hub's reason stands if it was first
            log.debug("worker stopped", worker=handle.spec.worker_id, reason=reason)

    # ---- experiments --------------------------------------------------------------

    def run(
        self, handle: WorkerHandle, command: Run, on_progress: ProgressCallback | None = None
    ) -> Outcome:
        """Send ``command`` and wait for its result, an error, death or the timeout."""
        wid = handle.spec.worker_id
        if self.closing:
            return Failure(f"not sent to worker {wid}: stopping", False)
        if not handle.alive or not self._send(wid, command):
            # Not connected any more: let its pidfd or heartbeat deadline explain.
            handle.mailbox.wait_lost(1.0)
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
                return Failure(reason, event.fatal, transient=event.retryable)

    def _time_out(self, handle: WorkerHandle, command: Run) -> Failure:
        self._send(handle.spec.worker_id, Cancel(experiment_id=command.experiment_id))
        grace_deadline_s = time.monotonic() + self.cancel_grace_s
        while (event := self._next_event(handle, grace_deadline_s)) is not None:
            if isinstance(event, Error | Result):
                break
        else:
            handle.mailbox.expect_exit()
            handle.process.kill()
            self._reap(handle, grace_s=5.0)
        return Failure(
            f"timed out after {command.config.timeout_s:g} s", not handle.alive, timed_out=True
        )

    # ---- waiting on a worker's mailbox --------------------------------------------

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
            handle.mailbox.expect_exit()
            handle.process.kill()
        self._reap(handle, grace_s=5.0)
        raise WorkerStartError(
            f"worker {spec.worker_id} ({describe_exit(handle.process.returncode())}) {state} on "
            f"{spec.endpoint}: check that its Python can `import lem.workers` with pyzmq and "
            f"msgspec installed, and read its log {spec.log_path}"
        )

    def _next_event(self, handle: WorkerHandle, deadline_s: float) -> Event | None:
        """The worker's next event, or None at the deadline or once it is lost. Waits in
        slices: the main thread raises an interrupt whose first raise CPython swallowed."""
        while True:
            left_s = deadline_s - time.monotonic()
            item = handle.mailbox.get(min(left_s, CHECK_SLICE_S))
            if item is not None or left_s <= CHECK_SLICE_S:
                return None if item is None or isinstance(item, Lost) else item
            raise_if_interrupted()
