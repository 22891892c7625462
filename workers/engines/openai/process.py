"""A server lem starts (start mode): its process group, its log, readiness and stop.

The command runs in a session of its own (its process group is the server's, so that a
stop reaches every process it forked), with ``CUDA_VISIBLE_DEVICES`` set to the GPUs lem
assigned (by UUID), stdout and stderr appended to a log beside the worker's. The server's
leader gets SIGTERM when the worker's thread that started it ends
(``PR_SET_PDEATHSIG``; the worker starts it from its main thread, so: when the worker
dies, even by SIGKILL); ``stop`` sends SIGTERM to the whole group, then SIGKILL after the
grace period, and an ``atexit`` hook stops a server the worker forgot. Every wait here
has a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from lem.workers.engines.base import BackendError, Cancelled, RetryableError

_PR_SET_PDEATHSIG = 1
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 8192
READY_POLL_S = 0.25
DEFAULT_READY_PATHS = ("/health", "/v1/models")


class ServerStartError(RetryableError):
    """The server did not become ready: it exited, or the timeout passed (retried: a
    fresh start may succeed, as a fresh worker may after one died)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_log_path() -> Path:
    """Where the server's output goes: beside the worker's own log (the file the worker's
    stdout is), as ``<worker log>.server.log``; else a fresh file in the temp folder."""
    with contextlib.suppress(OSError):
        worker_log = Path(os.readlink("/proc/self/fd/1"))
        if worker_log.is_file():
            return worker_log.with_name(worker_log.name + ".server.log")
    handle, name = tempfile.mkstemp(prefix="lem-openai-", suffix=".server.log")
    os.close(handle)
    return Path(name)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (at most ``LOG_TAIL_BYTES``), or why not."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - LOG_TAIL_BYTES))
            data = file.read()
    except OSError as error:
        return f"(no server log: {error})"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text) if text else "(the server's log is empty)"


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn``: SIGTERM to the child when the thread that started it ends."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def command_environment(gpu_uuids: Sequence[str], environment: str | None) -> dict[str, str]:
    """The worker's environment with ``CUDA_VISIBLE_DEVICES`` set to ``gpu_uuids`` (left as
    it is when there are none: a CPU run) and ``environment``'s ``bin/`` (or the folder
    itself) first on ``PATH``."""
    env = dict(os.environ)
    if gpu_uuids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_uuids)
    if environment is not None:
        folder = Path(environment).expanduser()
        bin_dir = folder / "bin" if (folder / "bin").is_dir() else folder
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        if (folder / "pyvenv.cfg").is_file():
            env["VIRTUAL_ENV"] = str(folder)
    return env


def group_pids(pgid: int) -> set[int]:
    """Processes of process group ``pgid`` and their descendants (from ``/proc``)."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid, ppid, group = int(entry.name), int(fields[1]), int(fields[2])
        parents[pid] = ppid
        if group == pgid:
            members.add(pid)
    grown = True
    while grown:
        children = {pid for pid, ppid in parents.items() if ppid in members} - members
        members |= children
        grown = bool(children)
    return members


class ServerProcess:
    """A started server: its process (the group leader), its log and port."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        self.popen = popen
        self.log_path = log_path
        self.port = port
        self._stopped = False
        atexit.register(self.stop, 5.0)

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        gpu_uuids: Sequence[str],
        environment: str | None,
        log_path: Path | None = None,
    ) -> ServerProcess:
        """Start ``command`` (``{port}`` replaced by a free port) in its own session."""
        port = free_port()
        argv = [arg.replace("{port}", str(port)) for arg in command]
        path = log_path or server_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        env = command_environment(gpu_uuids, environment)
        with open(path, "ab") as log:
            log.write(f"--- lem starts: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),
                )
            except OSError as error:  # a command that cannot run: not retried
                raise BackendError(f"cannot start the server {argv[0]!r}: {error}") from None
        return cls(popen, path, port)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_status(self) -> int | None:
        return self.popen.poll()

    def pids(self) -> set[int]:
        """The server's processes now (none once it has ended)."""
        return group_pids(self.popen.pid) if not self._stopped else set()

    def tail(self) -> str:
        return log_tail(self.log_path)

    def describe_death(self) -> str:
        """'the server exited (status N)' or '… was killed by SIGNAL', with its log's tail."""
        status = self.popen.poll()
        if status is None:
            how = "is still running"
        elif status < 0:
            how = f"was killed by {signal.Signals(-status).name}"
        else:
            how = f"exited with status {status}"
        return f"the server {how}; last lines of {self.log_path}:\n{self.tail()}"

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after ``grace_s``."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline_s = time.monotonic() + grace_s
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        while group_pids(pgid) and time.monotonic() < deadline_s:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)


def wait_ready(
    base_url: str,
    paths: Sequence[str],
    timeout_s: float,
    server: ServerProcess | None,
    cancel: threading.Event | None = None,
) -> str:
    """Poll ``paths`` of ``base_url`` in turn until one answers 200; that path. Raises
    ``ServerStartError`` when ``server`` exits meanwhile (at once, with its log's tail)
    or ``timeout_s`` passes, ``Cancelled`` when ``cancel`` is set."""
    deadline_s = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(2.0)) as client:
        while True:
            if server is not None and server.exit_status() is not None:
                raise ServerStartError(
                    f"the server ended before it was ready: {server.describe_death()}"
                )
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while waiting for the server")
            for path in paths:
                try:
                    response = client.get(path)
                except httpx.HTTPError as error:
                    last = f"GET {path}: {type(error).__name__}: {error}"
                    break  # not listening yet: the other paths would fail alike
                if response.status_code == 200:
                    return path
                last = f"GET {path}: HTTP {response.status_code}"
            if time.monotonic() >= deadline_s:
                where = f"; last lines of {server.log_path}:\n{server.tail()}" if server else ""
                raise ServerStartError(
                    f"the server at {base_url} was not ready after {timeout_s:g} s ({last}){where}"
                )
            time.sleep(READY_POLL_S)
