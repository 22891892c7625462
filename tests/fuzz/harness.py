"""Running ``lem`` on hostile input and checking what it did (the fuzz tests' property).

Each example gets a fresh sandbox folder (``work/``: the current directory, with the
inputs; ``home/``: ``HOME``). ``invoke`` runs the real command line in-process (click's
``CliRunner``, as a terminal would see it: colour codes are not stripped) under a
watchdog that sends the main thread a real SIGINT when the example runs too long (a
blocking ``open`` of a FIFO is woken too); ``invoke_subprocess`` runs ``python -m
lem.coordinator`` for what needs a process of its own. ``check`` is the property.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from lem.coordinator.cli.main import main
from lem.protocol.bounds import has_control_characters
from tests.fuzz import reproduce_line

EXAMPLE_TIMEOUT_S = 20.0  # a hang: far above any example's real time (well under 1 s)
MEMORY_HEADROOM_BYTES = 1 << 30  # address space an example may add to the process's own
SUBPROCESS_MEMORY_BYTES = 2 << 30

# What a library lem imports writes in HOME: matplotlib's config folder and font cache
LIBRARY_CACHES = ("home/.config/matplotlib", "home/.cache/matplotlib")

# A tree snapshot: relative path -> (kind and mode, size, mtime_ns, content digest or link)
Snapshot = dict[str, tuple[int, int, int, str]]


@dataclass
class Outcome:
    """What one ``lem`` command did."""

    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    error: str = ""  # an exception that escaped the command, with its traceback
    timed_out: bool = False

    def describe(self) -> str:
        return (
            f"lem {self.argv!r}\nexit {self.exit_code}, timed out: {self.timed_out}\n"
            f"stderr: {self.stderr[-3000:]!r}\nstdout: {self.stdout[-1000:]!r}\n"
            f"{self.error}\n{reproduce_line()}"
        )


class Sandbox:
    """A fresh folder for one example: ``work`` (the current directory) and ``home``."""

    def __init__(self, base: Path) -> None:
        self.root = Path(tempfile.mkdtemp(dir=base))
        self.work = self.root / "work"
        self.home = self.root / "home"
        self.work.mkdir()
        self.home.mkdir()

    def env(self) -> dict[str, str | None]:
        """The environment lem sees: no LEM_* variable of the test run, HOME in the sandbox."""
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LEM_")}
        home = str(self.home)
        env.update({"HOME": home, "XDG_CACHE_HOME": f"{home}/.cache", "XDG_DATA_HOME": home,
                    "XDG_CONFIG_HOME": f"{home}/.config", "COLUMNS": "120"})  # fmt: skip
        return env

    def snapshot(self) -> Snapshot:
        return snapshot(self.root)

    def remove(self) -> None:
        for folder, dirs, _files in os.walk(self.root):  # read-only folders of an example
            for name in dirs:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755)
        shutil.rmtree(self.root)


@contextmanager
def sandbox(base: Path) -> Iterator[Sandbox]:
    box = Sandbox(base)
    try:
        yield box
    finally:
        box.remove()


def snapshot(root: Path) -> Snapshot:
    """Every entry under ``root`` (links not followed, FIFOs and devices not opened)."""
    entries: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            content = ""
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                with open(path, "rb") as file:
                    content = hashlib.sha256(file.read()).hexdigest()
            entries[os.path.relpath(path, root)] = (
                info.st_mode, info.st_size, info.st_mtime_ns, content
            )  # fmt: skip
    return entries


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    """Paths created, removed or changed (content, size, mode or mtime) between two snapshots."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def invoke(argv: list[str], box: Sandbox, timeout_s: float = EXAMPLE_TIMEOUT_S) -> Outcome:
    """``lem ARGV`` in-process in ``box.work``; a hang past ``timeout_s`` is interrupted."""
    argv = as_argv(argv)
    fired = threading.Event()
    main_thread = threading.main_thread().ident
    assert main_thread is not None and threading.get_ident() == main_thread

    def interrupt() -> None:
        fired.set()
        signal.pthread_kill(main_thread, signal.SIGINT)

    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_argv, previous_cwd = sys.argv, os.getcwd()
    sys.argv = ["lem", *argv]  # what the top-level group reads to name a damaged --store
    os.chdir(box.work)
    timer = threading.Timer(timeout_s, interrupt)
    result = None
    try:
        try:
            timer.start()
            try:
                result = CliRunner(env=box.env()).invoke(main, argv, color=True)
            finally:
                timer.cancel()
                timer.join()
        except KeyboardInterrupt:
            if not fired.is_set():
                raise  # a real Ctrl-C: stop the test run
    finally:
        sys.argv = previous_argv
        os.chdir(previous_cwd)
        signal.signal(signal.SIGINT, previous_handler)
    if result is None or fired.is_set():
        return Outcome(argv, None, "", "", timed_out=True)
    error = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = "".join(traceback.format_exception(result.exception))
    return Outcome(argv, result.exit_code, result.stdout, result.stderr, error)


def as_argv(tokens: list[str]) -> list[str]:
    """``tokens`` as a real command line holds them: bytes without NUL, decoded as Python
    decodes ``sys.argv`` (bytes that are not UTF-8 become ``\\udc80``-``\\udcff``)."""
    return [os.fsdecode(_argv_bytes(token).replace(b"\x00", b"")) for token in tokens]


def _argv_bytes(token: str) -> bytes:
    try:
        return os.fsencode(token)
    except UnicodeEncodeError:  # a lone surrogate no argv decodes to: its UTF-8-ish bytes
        return token.encode("utf-8", "surrogatepass")


def _limit_memory() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY_BYTES, SUBPROCESS_MEMORY_BYTES))


def invoke_subprocess(argv: list[str], box: Sandbox, timeout_s: float = 60.0) -> Outcome:
    """``python -m lem.coordinator ARGV`` in ``box.work`` with a memory limit; a hang past
    ``timeout_s`` is killed and reported as timed out."""
    argv = as_argv(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEM_")}
    env.update({k: v for k, v in box.env().items() if v is not None})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lem.coordinator", *argv],
            cwd=box.work, env=env, capture_output=True, text=True, errors="replace",
            timeout=timeout_s, preexec_fn=_limit_memory,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(argv, None, "", "", timed_out=True)
    return Outcome(argv, done.returncode, done.stdout, done.stderr)  # check reads stderr


def check(outcome: Outcome, before: Snapshot, after: Snapshot, outputs: Iterable[str] = ()) -> None:
    """The property: exit 0, or exit 2 with one line ``lem: error: …`` on stderr; never a
    traceback or a hang; nothing a terminal would act on in what is printed; nothing
    written under the sandbox but ``outputs`` (relative to its root), the folders they are
    in, and ``LIBRARY_CACHES``."""
    why = outcome.describe()
    assert not outcome.timed_out, f"hung (over {EXAMPLE_TIMEOUT_S} s)\n{why}"
    assert not outcome.error, f"an exception escaped\n{why}"
    assert outcome.exit_code in (0, 2), f"exit status not 0 or 2\n{why}"
    lines = outcome.stderr.removesuffix("\n").split("\n")
    if logging_asked(outcome.argv):  # -v logs a failure's traceback (debug); the last line
        lines = lines[-1:]  # is still lem's one line
    else:
        assert "Traceback" not in outcome.stderr, f"a traceback\n{why}"
    if outcome.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("lem: error: "), f"not one line\n{why}"
    for name, text in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
        if name == "stdout" and ({"export", "--json"} & set(outcome.argv)):
            continue  # data (CSV, JSON), kept exact: JSON escapes C0 itself, not DEL or C1
        shown = text.replace("\n", "")
        assert not has_control_characters(shown), f"a control character on {name}\n{why}"
    allowed = {o.rstrip("/") for o in outputs} | set(LIBRARY_CACHES)
    ancestors = {str(p) for o in allowed for p in Path(o).parents if str(p) != "."}
    for path in sorted(changed(before, after)):
        if any(path == o or path.startswith(o + "/") for o in allowed):
            continue
        if path in ancestors and path in after and stat.S_ISDIR(after[path][0]):
            continue  # a folder that holds (or was made to hold) an output
        raise AssertionError(f"wrote {path!r} (outputs: {sorted(allowed)})\n{why}")


def logging_asked(argv: list[str]) -> bool:
    """Whether the command line asks for log lines on stderr (-v, --verbose, --log-json)."""
    short = [t for t in argv if t.startswith("-") and not t.startswith("--")]
    return any(t in ("--verbose", "--log-json") for t in argv) or any("v" in t for t in short)


@contextmanager
def bounded_memory(headroom_bytes: int = MEMORY_HEADROOM_BYTES) -> Iterator[None]:
    """Cap this process's address space at its present size plus ``headroom_bytes``: an
    input that makes lem allocate without bound fails with MemoryError, not the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = _address_space_bytes()
    cap = size + headroom_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")
