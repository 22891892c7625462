"""tcp:// is CurveZMQ (issue 18): a peer without the campaign's key gets no frame to the hub,
the keys reach a worker only through its environment and never show, and a CURVE hub
leaves no thread or socket behind."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner
from rich.console import Console
from zmq.utils.monitor import recv_monitor_message

from lem.coordinator.cli.doctor import render_variables
from lem.coordinator.cli.main import main
from lem.coordinator.execution.gpus import CPU_ONLY
from lem.coordinator.execution.hub import Hub
from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec, worker_environment
from lem.protocol.codec import encode
from lem.protocol.curve import CurveError, CurveKeys, take_keys
from lem.protocol.messages import Hello, Progress
from lem.protocol.variables import CURVE_PUBLIC_KEY, CURVE_SECRET_KEY, CURVE_SERVER_KEY
from lem.workers.runtime.channel import WorkerChannel
from tests.test_transport import _collect, _hello

Ctx = zmq.Context[zmq.Socket[bytes]]
HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_SUCCEEDED,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
}


@pytest.fixture
def tcp_hub() -> Iterator[Hub]:
    hub = Hub("tcp://127.0.0.1:*")
    yield hub
    hub.close()


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    context: Ctx = zmq.Context()
    yield context
    context.destroy(linger=0)


def _client(
    ctx: Ctx, hub: Hub, worker_id: str, keys: tuple[bytes, bytes] | None
) -> zmq.Socket[bytes]:
    """A raw DEALER posing as ``worker_id``; ``keys`` (public, secret): a CURVE client of the
    hub's server key with that keypair."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, worker_id.encode())
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        assert hub.curve_public_key is not None
        sock.setsockopt(zmq.CURVE_SERVERKEY, hub.curve_public_key.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys[1])
    return sock


def _first_handshake(sock: zmq.Socket[bytes], endpoint: str, timeout_s: float = 10.0) -> int:
    """Connect ``sock`` to ``endpoint``, send a hello and a progress event as the worker it
    poses as, and return the first handshake event its connection reports."""
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(endpoint)
        worker_id = sock.getsockopt_string(zmq.IDENTITY)
        sock.send(encode(_hello(worker_id)))
        sock.send(encode(Progress(worker_id=worker_id, experiment_id="e", phase="warmup")))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if monitor.poll(100):
                event = int(recv_monitor_message(monitor)["event"])
                if event in HANDSHAKE_EVENTS:
                    return event
        raise AssertionError(f"no handshake within {timeout_s} s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


def test_a_client_without_the_campaigns_key_gets_no_frame_accepted(tcp_hub: Hub, ctx: Ctx) -> None:
    """Raw clients posing as an attached worker — no CURVE at all, a random keypair, the
    workers' public key with a secret that is not its own — fail the handshake: the hub reads
    not one frame of theirs (nothing is decoded) and sends them nothing; the campaign's key
    gets its frames through."""
    keys = tcp_hub.worker_keys
    assert keys is not None and keys.server_public == tcp_hub.curve_public_key
    box = tcp_hub.attach("w-1", heartbeat_interval_s=0.1)
    random_public, random_secret = zmq.curve_keypair()
    impostors = {
        "no CURVE": None,
        "a random keypair": (random_public, random_secret),
        "the workers' public key, another secret": (keys.public.encode(), random_secret),
    }
    for name, impostor in impostors.items():
        sock = _client(ctx, tcp_hub, "w-1", impostor)
        event = _first_handshake(sock, tcp_hub.endpoint)
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, name
        assert box.get(0.3) is None, name  # nothing reached the attached worker's mailbox
        assert tcp_hub.frames_received == 0, name  # nor the hub's receive path at all
        assert not sock.poll(0), name  # and the hub's heartbeats for w-1 never reached it
        sock.close(linger=0)
    assert tcp_hub.peers_refused >= 1  # the random keypair reached the ZAP handler, refused
    good = _client(ctx, tcp_hub, "w-1", (keys.public.encode(), keys.secret.encode()))
    assert _first_handshake(good, tcp_hub.endpoint) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert isinstance(_collect(box, Hello), Hello)
    assert isinstance(_collect(box, Progress), Progress)
    assert tcp_hub.frames_received == 2
    assert good.poll(5000)  # the hub's heartbeat comes back to the real worker


def test_a_curve_hub_leaves_no_thread_or_socket_after_close(ctx: Ctx) -> None:
    """A tcp:// hub answers ZAP on its own I/O thread (no authenticator thread); close stops
    it and closes the ROUTER and the ZAP socket (the context's term would hang otherwise):
    no thread, no descriptor, the port free again."""
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = set(threading.enumerate())
    hub = Hub("tcp://127.0.0.1:*")
    assert hub.curve_public_key is not None and hub.worker_keys is not None
    assert [t.name for t in set(threading.enumerate()) - threads_before] == ["lem-hub-io"]
    box = hub.attach("w-zap")
    channel = WorkerChannel(hub.endpoint, "w-zap", heartbeat_interval_s=0.1, curve=hub.worker_keys)
    channel.start(_hello("w-zap"))
    assert isinstance(_collect(box, Hello), Hello)  # the ZAP handler admitted it
    channel.close()
    closing = threading.Thread(target=hub.close)
    closing.start()
    closing.join(10)
    assert not closing.is_alive(), "Hub.close hung (a socket left open in its context?)"
    assert set(threading.enumerate()) == threads_before and not hub.running
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    again = ctx.socket(zmq.ROUTER)
    again.bind(hub.endpoint)  # the port is free: the ROUTER is closed
    again.close(linger=0)


def test_a_worker_refuses_tcp_without_keys_and_gets_them_only_from_its_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys, no tcp://: the channel refuses, and so does a worker process (one line, exit
    2). Keys in the coordinator's own environment never pass to a worker; a spec's do, and
    the worker takes them out of its environment (nothing it starts inherits the secret)."""
    done = subprocess.run(
        [sys.executable, "-m", "lem.workers", "--endpoint", "tcp://127.0.0.1:1",
         "--worker-id", "w-bare", "--backend", "pytorch", "--journal", str(tmp_path / "j"),
         "--handshake-timeout-s", "3"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("LEM_CURVE_")},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "tcp:// endpoint needs the campaign's CURVE keys" in done.stderr
    assert "Traceback" not in done.stderr
    stale = CurveKeys("s" * 40, "p" * 40, "x" * 40).environment()
    for name, value in stale.items():  # the coordinator's own environment has some
        monkeypatch.setenv(name, value)
    assert not set(stale) & set(worker_environment(CPU_ONLY))
    hub = Hub("tcp://127.0.0.1:*")
    keys = hub.worker_keys
    assert keys is not None and keys.secret not in repr(keys)
    fake = tmp_path / "python"  # the worker's interpreter: it records what it was given
    fake.write_text(f'#!/bin/sh\nenv > {tmp_path}/env\necho "$@" > {tmp_path}/argv\n')
    fake.chmod(0o755)
    try:
        spec = WorkerSpec("w-k", "pytorch", hub.endpoint, CPU_ONLY, tmp_path / "j", tmp_path / "l",
                          python=str(fake), curve=keys)  # fmt: skip
        process = LocalProcessLauncher().launch(spec)
        assert process.wait(10) == 0
        process.release()
    finally:
        hub.close()
    lines = (tmp_path / "env").read_text().splitlines()
    seen = dict(line.split("=", 1) for line in lines if line.startswith("LEM_CURVE_"))
    assert keys.secret not in (tmp_path / "argv").read_text()  # not on the command line (ps)
    assert {k: seen[k] for k in stale} == keys.environment()
    environ = dict(keys.environment())
    assert take_keys(environ) == keys and environ == {}


def test_partial_or_malformed_keys_are_refused_naming_the_variable_not_the_value() -> None:
    server_public = zmq.curve_keypair()[0].decode()
    keys = CurveKeys(server_public, *(key.decode() for key in zmq.curve_keypair()))
    partial = keys.environment()
    del partial[CURVE_PUBLIC_KEY.name]
    with pytest.raises(CurveError, match=f"without {CURVE_PUBLIC_KEY.name}"):
        take_keys(partial)
    malformed = {**keys.environment(), CURVE_SECRET_KEY.name: "~" * 40}
    with pytest.raises(CurveError, match=f"{CURVE_SECRET_KEY.name} is not a CurveZMQ key") as exc:
        take_keys(malformed)
    assert "~" not in str(exc.value)
    assert take_keys({CURVE_SERVER_KEY.name: ""}) is None  # empty is unset


def test_lem_doctor_never_shows_the_secret_key() -> None:
    """``lem doctor``'s variables, set ones or all: the secret key is named, never shown."""
    secret = zmq.curve_keypair()[1].decode()
    env = {CURVE_SECRET_KEY.name: secret, CURVE_SERVER_KEY.name: "S" * 40}
    for every in (False, True):
        out = io.StringIO()
        render_variables(Console(file=out, width=400), every=every, environ=env)
        text = out.getvalue()
        assert CURVE_SECRET_KEY.name in text and "(set; hidden)" in text, text
        assert secret not in text
        assert "S" * 40 in text  # a public key is shown


def test_a_libzmq_without_curve_refuses_tcp_in_one_line(
    tiny_campaign: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where libzmq has no CURVE, a tcp:// hub is a ``CurveError`` (no thread started) and
    ``--endpoint tcp://…`` one line, exit 2, before anything is stored; ipc:// still works."""
    real_has = zmq.has
    monkeypatch.setattr(zmq, "has", lambda feature: feature != "curve" and real_has(feature))
    threads_before = set(threading.enumerate())
    with pytest.raises(CurveError, match="tcp:// endpoints need CurveZMQ, which this libzmq"):
        Hub("tcp://127.0.0.1:*")
    assert set(threading.enumerate()) == threads_before
    Hub().close()
    db = tiny_campaign.parent / "lem.db"
    args = ["campaign", str(tiny_campaign), "--store", str(db), "--endpoint", "tcp://127.0.0.1:*"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert done.output.startswith("lem: error: --endpoint tcp://127.0.0.1:*: tcp:// endpoints")
    assert done.output.count("\n") == 1 and not db.exists()
