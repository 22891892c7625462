"""The worker launcher of a Ray cluster: ``WorkerLauncher`` and ``WorkerProcess`` over a
``WorkerHost`` actor (ray_cluster.py). The hub watches a remote worker by polling its
actor (there is no pidfd across hosts): an actor that cannot answer because its node left
the cluster reads as a worker killed (``NODE_LOST_STATUS``)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any

import structlog

from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.launcher import WorkerSpec
from lem.coordinator.execution.ray_cluster import NodeLost, RayCluster

log = structlog.get_logger("lem.ray")

NODE_LOST_STATUS = -int(signal.SIGKILL)  # how a worker on a lost node reads


class RayProcess:
    """A worker started by a ``WorkerHost`` on a cluster node."""

    def __init__(self, cluster: RayCluster, actor: Any, pid: int, node: str) -> None:
        self._cluster = cluster
        self._actor = actor
        self.pid = pid
        self.node = node  # the node's hostname
        self._status: int | None = None
        self._poll: Any = None  # a poll sent, not yet answered

    def sentinel_fd(self) -> int | None:
        return None

    def returncode(self) -> int | None:
        """The worker's exit status, None while it runs. Never blocks (the hub's I/O thread
        asks): a poll is sent, and its answer read at a later call once it has come."""
        if self._status is not None:
            return self._status
        if self._poll is None:
            self._poll = self._actor.poll.remote()
        done, answer = self._cluster.ready(self._poll)
        if not done:
            return None
        self._poll = None
        if isinstance(answer, BaseException):
            log.warning("worker's node lost", node=self.node, reason=type(answer).__name__)
            self._status = NODE_LOST_STATUS
        elif answer is not None:
            self._status = int(answer)
        return self._status

    def _signal(self, kill: bool) -> None:
        with contextlib.suppress(Exception):  # nothing left to signal
            self._actor.signal.remote(kill)

    def terminate(self) -> None:
        self._signal(False)

    def kill(self) -> None:
        self._signal(True)

    def wait(self, timeout_s: float) -> int | None:
        if self._status is not None:
            return self._status
        try:
            status = self._cluster.call(self._actor.wait.remote(timeout_s), timeout_s + 10.0)
        except Exception:  # the actor or its node is gone
            status = NODE_LOST_STATUS
        self._status = status
        return status

    def release(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._cluster.release(self._actor)


class RayLauncher:
    """Starts each worker on the node of its GPUs; ``worker_env`` gives the variables the
    worker needs beyond its node's (the campaign's CurveZMQ keys)."""

    def __init__(
        self, cluster: RayCluster, worker_env: Callable[[WorkerSpec], dict[str, str]] | None = None
    ) -> None:
        self.cluster = cluster
        self._worker_env = worker_env

    def lost(self, assignment: GpuAssignment) -> bool:
        return self.cluster.lost(assignment)

    def launch(self, spec: WorkerSpec) -> RayProcess:
        actor, _ = self.cluster.host(spec.assignment)
        endpoint = spec.endpoint.replace("tcp://0.0.0.0:", f"tcp://{self.cluster.driver_ip()}:")
        args = [
            "--endpoint", endpoint, "--worker-id", spec.worker_id, "--backend", spec.backend,
            "--gpus", ",".join(spec.assignment.gpu_uuids),
            "--handshake-timeout-s", str(spec.handshake_timeout_s),
        ]  # fmt: skip
        if spec.protocol_version is not None:
            args += ["--protocol-version", str(spec.protocol_version)]
        campaign_id = spec.journal_path.parent.parent.name  # runs/<campaign id>/journals/
        extra = self._worker_env(spec) if self._worker_env is not None else {}
        if spec.curve is not None:  # the campaign's CurveZMQ keys: in the environment only
            extra = {**extra, **spec.curve.environment()}
        ref = actor.start.remote(
            args, spec.backend, list(spec.assignment.gpu_uuids), campaign_id, spec.worker_id,
            extra,
        )  # fmt: skip
        try:
            pid, hostname = self.cluster.call(ref)
        except Exception as exc:  # the node left, or the worker could not be started there
            self.cluster.release(actor)
            raise NodeLost(f"worker {spec.worker_id} not started on its node: {exc}") from exc
        log.info("worker started", worker=spec.worker_id, node=hostname, pid=pid)
        return RayProcess(self.cluster, actor, pid, hostname)
