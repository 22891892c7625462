"""Workers on the nodes of a Ray cluster (``lem campaign --cluster ray://HEAD:PORT``).

Ray is the distributed engine; lem schedules nothing itself. The coordinator joins the
cluster as a driver (CUDA-free: Ray's core imports no CUDA library), asks each live node
for its GPUs (NVML, read on the node by a zero-CPU task pinned there), and starts each
worker through a ``WorkerHost`` actor pinned to the node whose GPUs the worker was given
(hard node affinity; it holds that many of Ray's GPU resources, so no other Ray job lands
on them). The actor starts ``python -m lem.workers`` as its child, resolving the engine's
interpreter and the worker's environment *on the node* (its Nix store path or synced lock
environment; ``CUDA_VISIBLE_DEVICES`` = the GPU UUIDs), with the campaign's CurveZMQ keys;
the worker connects back over tcp:// and dies with its actor (parent-death signal), which
dies with the driver.

Each worker journals on its own node, under ``<node state dir>/<campaign id>/journals/``
(``$XDG_STATE_HOME/lem/ray-runs``, default ``~/.local/state/lem/ray-runs``). ``gather``
copies every live node's journals and logs into the campaign's local run folder (before a
resume ingests them, and when a run ends). Ray imports lazily: lem without a cluster never
loads it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from lem.coordinator.execution.gpus import GpuAssignment
from lem.coordinator.execution.supervisor import WorkerStartError
from lem.protocol.curve import CURVE_VARIABLES
from lem.protocol.errors import BadInput
from lem.protocol.results import GpuInfo

log = structlog.get_logger("lem.ray")

NAMESPACE = "lem"
CALL_TIMEOUT_S = 30.0  # one call to an actor or a node task (s)
PROBE_TIMEOUT_S = 10.0  # a live node runs a no-op task within this (s); else it is lost


class ClusterError(BadInput):
    """The cluster cannot be reached or offers no usable node; one line."""


class NodeLost(WorkerStartError):
    """The node a worker was to run on left the cluster (retryable: elsewhere)."""


def node_state_dir() -> Path:
    """Where this node keeps lem's journals and logs of cluster campaigns."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lem" / "ray-runs"


@dataclass(frozen=True)
class ClusterNode:
    """A live node and the GPUs NVML shows there."""

    node_id: str
    hostname: str
    gpus: list[GpuInfo]
    unavailable_reason: str | None = None


# ---- on the nodes -------------------------------------------------------------------


def _node_inventory() -> tuple[str, list[GpuInfo], str | None]:
    from lem.protocol.devices.nvml import inventory

    found = inventory()
    return socket.gethostname(), found.gpus, found.unavailable_reason


def _hostname() -> str:
    return socket.gethostname()


def _read_node_files(campaign_id: str) -> dict[str, bytes]:
    """This node's journals and logs of ``campaign_id``: relative path → bytes."""
    root = node_state_dir() / campaign_id
    found: dict[str, bytes] = {}
    for sub, pattern in (("journals", "*.jsonl"), ("logs", "*.log")):
        folder = root / sub
        if folder.is_dir():
            for path in sorted(folder.glob(pattern)):
                if path.is_file():
                    found[f"{sub}/{path.name}"] = path.read_bytes()
    return found


class WorkerHost:
    """The Ray actor that starts one worker on its node and watches it."""

    def __init__(self) -> None:
        self._popen: subprocess.Popen[bytes] | None = None

    def start(
        self, args: list[str], backend: str, gpu_uuids: list[str], campaign_id: str,
        worker_id: str, extra_env: dict[str, str],
    ) -> tuple[int, str]:  # fmt: skip
        """Start the worker; (its pid, this node's hostname)."""
        from lem.coordinator.execution.launcher import (
            parent_death_signal,
            resolve_interpreter,
            worker_environment,
        )

        root = node_state_dir() / campaign_id
        (root / "journals").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(parents=True, exist_ok=True)
        command = [
            resolve_interpreter(backend), "-m", "lem.workers", *args,
            "--journal", str(root / "journals" / f"{worker_id}.jsonl"),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        env = {
            **{k: v for k, v in worker_environment(GpuAssignment(tuple(gpu_uuids))).items()
               if k not in {v.name for v in CURVE_VARIABLES}},  # never stale keys
            **extra_env,
        }  # fmt: skip
        with open(root / "logs" / f"{worker_id}.log", "ab") as log_file:
            self._popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=parent_death_signal(os.getpid()),
            )  # fmt: skip
        return self._popen.pid, socket.gethostname()

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def signal(self, kill: bool) -> None:
        if self._popen is not None and self._popen.poll() is None:
            (self._popen.kill if kill else self._popen.terminate)()

    def wait(self, timeout_s: float) -> int | None:
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None


# ---- on the coordinator -------------------------------------------------------------

REACH_TIMEOUT_S = 5.0  # a cluster's head answers a TCP connect within this (s)


def _check_reachable(address: str, target: str) -> None:
    """One line, at once, for an address nothing listens at (``ray.init`` would retry for
    minutes)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--cluster {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"--cluster {address}: no Ray cluster answers there ({exc})") from exc


class RayCluster:
    """The coordinator's handle on the cluster (see the module docstring)."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ClusterError(
                "--cluster needs Ray: pip install 'lem[cluster]' (ray>=2.60)"
            ) from exc
        self._ray: Any = ray
        target = None if address == "auto" else address.removeprefix("ray://")
        if target is not None:
            _check_reachable(address, target)
        try:
            ray.init(
                address=target or "auto", namespace=NAMESPACE, logging_level=logging.ERROR,
                log_to_driver=False, include_dashboard=False,
            )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"--cluster {address}: cannot join the Ray cluster: {exc}") from exc
        self.address = address
        self._host_actor = ray.remote(num_cpus=0, max_restarts=0)(WorkerHost)
        self.nodes: dict[str, ClusterNode] = {}
        self.node_of: dict[str, str] = {}  # GPU UUID → node id

    def driver_ip(self) -> str:
        """The address workers on other nodes reach this coordinator at."""
        return str(self._ray.util.get_node_ip_address())

    def _on(self, node_id: str) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id, soft=False)

    def live_node_ids(self) -> set[str]:
        return {n["NodeID"] for n in self._ray.nodes() if n.get("Alive")}

    def discover(self) -> list[ClusterNode]:
        """Every live node with its GPUs (read there); fills ``nodes`` and ``node_of``."""
        ray = self._ray
        task = ray.remote(num_cpus=0, max_retries=0)(_node_inventory)
        ids = sorted(self.live_node_ids())
        refs = [task.options(scheduling_strategy=self._on(i)).remote() for i in ids]
        nodes = []
        for node_id, ref in zip(ids, refs, strict=True):
            try:
                hostname, gpus, reason = ray.get(ref, timeout=CALL_TIMEOUT_S)
            except Exception as exc:  # a node that cannot answer is left out
                log.warning("node left out", node=node_id[:8], reason=str(exc))
                continue
            nodes.append(ClusterNode(node_id, hostname, list(gpus), reason))
        self.nodes = {n.node_id: n for n in nodes}
        self.node_of = {g.uuid: n.node_id for n in nodes for g in n.gpus}
        if not self.node_of:
            raise ClusterError(f"--cluster {self.address}: no node of the cluster shows a GPU")
        return nodes

    def all_gpus(self) -> list[GpuInfo]:
        return [g for n in self.nodes.values() for g in n.gpus]

    def lost(self, assignment: GpuAssignment) -> bool:
        """Whether the node holding ``assignment``'s GPUs has left the cluster: Ray says so,
        or it cannot run a no-op task within ``PROBE_TIMEOUT_S`` (Ray's own health check
        takes ~30 s by default to declare a node dead)."""
        nodes = {self.node_of.get(u) for u in assignment.gpu_uuids}
        if not nodes or None in nodes:
            return False
        [node_id] = nodes
        if node_id not in self.live_node_ids():
            return True
        probe = self._ray.remote(num_cpus=0, max_retries=0)(_hostname)
        pinned = probe.options(scheduling_strategy=self._on(node_id))
        try:
            self.call(pinned.remote(), PROBE_TIMEOUT_S)
        except Exception:  # no answer: gone (or too sick to measure on)
            return True
        return False

    def host(self, assignment: GpuAssignment) -> tuple[Any, str]:
        """A fresh ``WorkerHost`` on the node of ``assignment``; (actor, node id)."""
        [node_id] = {self.node_of[u] for u in assignment.gpu_uuids}
        if node_id not in self.live_node_ids():
            raise NodeLost(f"node {node_id[:8]} has left the cluster")
        actor = self._host_actor.options(
            scheduling_strategy=self._on(node_id), num_gpus=len(assignment.gpu_uuids)
        ).remote()
        return actor, node_id

    def call(self, ref: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        return self._ray.get(ref, timeout=timeout_s)

    def ready(self, ref: Any) -> tuple[bool, Any]:
        """Without waiting: (whether ``ref`` has its answer, the answer or its error)."""
        done, _ = self._ray.wait([ref], timeout=0)
        if not done:
            return False, None
        try:
            return True, self._ray.get(ref, timeout=0)
        except Exception as exc:  # the actor, its worker or its node is gone
            return True, exc

    def release(self, actor: Any) -> None:
        self._ray.kill(actor, no_restart=True)

    def gather(self, campaign_id: str, run_folder: Path) -> int:
        """Copy every live node's journals and logs of the campaign into ``run_folder``
        (``journals/<node>-<file>``, ``logs/<node>-<file>``); how many files."""
        ray = self._ray
        task = ray.remote(num_cpus=0, max_retries=0)(_read_node_files)
        copied = 0
        for node_id in sorted(self.live_node_ids()):
            try:
                files = ray.get(
                    task.options(scheduling_strategy=self._on(node_id)).remote(campaign_id),
                    timeout=CALL_TIMEOUT_S,
                )
            except Exception as exc:  # a lost node's files are lost with it
                log.warning("node's journals not gathered", node=node_id[:8], reason=str(exc))
                continue
            for relative, data in files.items():
                sub, name = relative.split("/", 1)
                target = run_folder / sub / f"{node_id[:8]}-{name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(data)
                partial.replace(target)
                copied += 1
        return copied

    def close(self) -> None:
        self._ray.shutdown()
