"""Starting worker processes, behind an executor interface (local now, Ray later).

The worker environment is allow-listed (as pyperf does): only the variables below pass,
plus what the coordinator sets — ``CUDA_VISIBLE_DEVICES`` from the one GPU assignment
function, ``CUDA_DEVICE_ORDER``, offline switches for model hubs, and the host's NVIDIA
driver libraries first on ``LD_LIBRARY_PATH`` (``protocol/devices/driver_libs.py`` says why).
The CURVE key variables never pass from the coordinator's own environment: a worker gets
the keys of its spec (its hub's, for a tcp:// endpoint) or none.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from lem.coordinator.execution.environments import realise, resolve_python
from lem.coordinator.execution.gpus import GpuAssignment
from lem.protocol.curve import CURVE_VARIABLES, CurveKeys
from lem.protocol.devices.driver_libs import DriverSearch, worker_driver_folder
from lem.protocol.variables import PREFIX

log = structlog.get_logger("lem.launcher")

ENV_ALLOWED_NAMES = {
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NIX_PATH",
    "SSL_CERT_FILE",
}
ENV_ALLOWED_PREFIXES = ("LC_", "NCCL_", "TORCH_", "NVSHMEM_", PREFIX, "PYTORCH_", "TRITON_")


def worker_environment(
    assignment: GpuAssignment,
    base: dict[str, str] | None = None,
    driver_search: DriverSearch | None = None,
) -> dict[str, str]:
    """The allow-listed environment of a worker given ``assignment``.

    ``base`` (default ``os.environ``) is filtered; its cache folder holds the driver link
    folder. ``driver_search`` (default: the host's places) is where driver libraries are
    looked for; none found leaves ``LD_LIBRARY_PATH`` as it was.
    """
    source = os.environ if base is None else base
    env = {
        k: v
        for k, v in source.items()
        if k in ENV_ALLOWED_NAMES or k.startswith(ENV_ALLOWED_PREFIXES)
    }
    for variable in CURVE_VARIABLES:  # only a spec's keys reach a worker (``launch``)
        env.pop(variable.name, None)
    env["CUDA_VISIBLE_DEVICES"] = assignment.cuda_visible_devices
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    try:
        drivers = worker_driver_folder(source, driver_search)
    except OSError as exc:  # a CPU run must not fail for it; `lem doctor` shows the reason
        log.warning("workers get no driver libraries", reason=str(exc))
        drivers = None
    if drivers is not None:
        env["LD_LIBRARY_PATH"] = with_library_folder(env.get("LD_LIBRARY_PATH"), drivers)
    return env


def with_library_folder(ld_library_path: str | None, folder: Path) -> str:
    """``folder`` first, then the user's ``LD_LIBRARY_PATH`` unchanged (no empty entry, which
    would mean the working directory; no second copy of ``folder``)."""
    if not ld_library_path:
        return str(folder)
    if ld_library_path.split(":")[0] == str(folder):
        return ld_library_path
    return f"{folder}:{ld_library_path}"


def resolve_interpreter(backend: str) -> str:
    """The Python that runs ``backend``'s worker: explicit, Nix, synced venv, else this one
    (``environments.resolve_python`` has the rules); a Nix one is built on first use."""
    return realise(resolve_python(backend))


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker process."""

    worker_id: str
    backend: str
    endpoint: str
    assignment: GpuAssignment
    journal_path: Path
    log_path: Path
    handshake_timeout_s: float = 60.0
    protocol_version: int | None = None  # only tests override this
    python: str | None = None  # the worker's interpreter; None: resolve_interpreter(backend)
    curve: CurveKeys | None = None  # the hub's ``worker_keys``: needed for a tcp:// endpoint


class WorkerProcess(Protocol):
    """A started worker, as the supervisor sees it."""

    pid: int

    def sentinel_fd(self) -> int | None: ...

    def returncode(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout_s: float) -> int | None: ...

    def release(self) -> None:
        """Free OS resources held for watching (the pidfd); call once it is unwatched."""
        ...


class WorkerLauncher(Protocol):
    def launch(self, spec: WorkerSpec) -> WorkerProcess: ...


class LocalProcess:
    """A worker started with ``subprocess`` on this host, watched through a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def sentinel_fd(self) -> int | None:
        return self._pidfd

    def returncode(self) -> int | None:
        return self._popen.poll()

    def terminate(self) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    def wait(self, timeout_s: float) -> int | None:
        try:
            code = self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        return code

    def release(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


_PR_SET_PDEATHSIG = 1


def parent_death_signal(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGTERM when its parent dies, set before the exec:
    an interpreter that hangs before lem's code runs (which sets it again,
    ``workers/runtime/main.py``) is not orphaned. Linux ties it to the *thread* that
    started the child, as ever (the lanes note, ``lanes.py``). None where there is no prctl.

    ``prctl`` is looked up here, in the parent: the child only calls it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the signal was set
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


class LocalProcessLauncher:
    """Starts workers as child processes in their own session (Ctrl-C reaches only us),
    each to end with the coordinator (``parent_death_signal``)."""

    def launch(self, spec: WorkerSpec) -> LocalProcess:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            spec.python or resolve_interpreter(spec.backend),
            "-m",
            "lem.workers",
            "--endpoint",
            spec.endpoint,
            "--worker-id",
            spec.worker_id,
            "--backend",
            spec.backend,
            "--journal",
            str(spec.journal_path),
            "--gpus",
            ",".join(spec.assignment.gpu_uuids),
            "--parent-pid",
            str(os.getpid()),
            "--handshake-timeout-s",
            str(spec.handshake_timeout_s),
        ]
        if spec.protocol_version is not None:
            command += ["--protocol-version", str(spec.protocol_version)]
        env = worker_environment(spec.assignment)
        if spec.curve is not None:  # in the environment: a command line is public (ps)
            env.update(spec.curve.environment())
        with open(spec.log_path, "ab") as log_file:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=parent_death_signal(os.getpid()),
            )
        return LocalProcess(popen)


def describe_exit(returncode: int | None) -> str:
    """'exit status 1', 'killed by SIGKILL', or 'still running'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
