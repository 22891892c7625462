"""A real Ray cluster on this machine for the cluster tests: a head without GPUs and worker
nodes started with ``ray start``, each advertising one GPU that its replayed NVML trace
backs (a copy of tests/data/h100_load.jsonl under a UUID of its own), the sleep engine, and
a state folder of its own (its journals). Node death is quick to see: the head checks
health every 0.5 s."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TRACE = Path(__file__).parents[1] / "data" / "h100_load.jsonl"
SLEEP_ENGINE = "lem.workers.engines.sleep:SleepBackend"
RAY = str(Path(sys.executable).parent / "ray")
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpu_uuid(name: str) -> str:
    """The UUID node ``name`` ('a', 'b', …) replays."""
    return f"GPU-{name * 8}-0000-4000-8000-{ord(name):012x}"


@dataclass
class LocalRayCluster:
    """The cluster's address, and per node its UUID and state folder."""

    root: Path
    address: str = ""
    nodes: dict[str, Path] = field(default_factory=dict)  # node name → its XDG_STATE_HOME

    def start(self, names: tuple[str, ...] = ("a", "b")) -> None:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        env = {**os.environ, **FAST_HEALTH}
        self._ray("start", "--head", "--port", str(port), "--num-cpus", "0", "--num-gpus", "0",
                  env=env)  # fmt: skip
        original = TRACE.read_text()
        [source_uuid] = {d["uuid"] for d in json.loads(original.splitlines()[0])["devices"]}
        for name in names:
            trace = self.root / f"trace-{name}.jsonl"
            trace.write_text(original.replace(source_uuid, gpu_uuid(name)))
            state = self.root / f"state-{name}"
            node_env = {
                **env,
                "LEM_NVML_REPLAY": str(trace),
                "LEM_WORKER_BACKEND": SLEEP_ENGINE,
                "XDG_STATE_HOME": str(state),
            }
            self._ray("start", "--address", self.address, "--num-cpus", "2", "--num-gpus", "1",
                      env=node_env)  # fmt: skip
            self.nodes[name] = state

    def _ray(self, *args: str, env: dict[str, str]) -> None:
        extra = ["--object-store-memory", "78643200"] if args[0] == "start" else []
        if args[:2] == ("start", "--head"):
            extra += ["--include-dashboard=false", "--temp-dir", str(self.root / "ray")]
        done = subprocess.run([RAY, *args, *extra], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]

    def raylet(self, name: str) -> psutil.Process:
        """Node ``name``'s raylet (found by its state folder in its environment)."""
        marker = f"XDG_STATE_HOME={self.nodes[name]}"
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if "raylet" in (proc.info["cmdline"] or [""])[0] and marker in {
                    f"{k}={v}" for k, v in proc.environ().items()
                }:
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        raise AssertionError(f"no raylet of node {name}")

    def kill_node(self, name: str) -> None:
        """SIGKILL node ``name``'s raylet and everything under it: the node is gone."""
        raylet = self.raylet(name)
        for proc in [*raylet.children(recursive=True), raylet]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        """Kill this cluster's processes (those naming its folder, and all under them),
        not any other Ray on the machine (``ray stop`` would end them all)."""
        own: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.root) in part for part in proc.info["cmdline"] or []):
                own[proc.pid] = proc
                with contextlib.suppress(psutil.NoSuchProcess):
                    own.update({c.pid: c for c in proc.children(recursive=True)})
        for proc in own.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(list(own.values()), timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def short_root() -> Path:
    """A short folder: Ray's socket paths must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
