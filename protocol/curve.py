"""CurveZMQ keys for a tcp:// endpoint, shared by the coordinator, which makes them, and the
workers, which read them from their environment.

A hub bound to tcp:// is a CURVE server (``coordinator/execution/curve.py``): each hub — one
per ``lem campaign``/``run``/``resume`` — makes a fresh server keypair and one client
keypair for its workers, and accepts no other client key. The keys live in memory only;
nothing is written to disk. The launcher hands a worker the server's public key and the
client keypair in its environment (``LEM_CURVE_SERVER_KEY``, ``LEM_CURVE_PUBLIC_KEY``,
``LEM_CURVE_SECRET_KEY``), never on its command line, which any user of the host can read
(``ps``); a process's environment only its owner can (``/proc/PID/environ``). The worker
takes them out of its own environment as it reads them (``take_keys``), so nothing it
starts — the telemetry sidecar, an engine's server — inherits the secret.
"""

from __future__ import annotations

import os
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import zmq
from zmq.utils import z85

from lem.protocol.errors import LemError
from lem.protocol.variables import CURVE_PUBLIC_KEY, CURVE_SECRET_KEY, CURVE_SERVER_KEY, Variable

KEY_CHARS = 40  # a 32-byte key in Z85
CURVE_VARIABLES: tuple[Variable, ...] = (CURVE_SERVER_KEY, CURVE_PUBLIC_KEY, CURVE_SECRET_KEY)


class CurveError(LemError):
    """CURVE cannot be used: libzmq lacks it, or a worker's keys are missing or malformed."""


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def require_curve() -> None:
    """Raise ``CurveError`` unless the installed libzmq has CURVE (built with libsodium)."""
    if not zmq.has("curve"):
        raise CurveError(
            f"tcp:// endpoints need CurveZMQ, which this libzmq ({zmq.zmq_version()}) lacks: "
            "use an ipc:// endpoint, or a pyzmq whose libzmq has CURVE"
        )


def new_keypair() -> tuple[str, str]:
    """A fresh CURVE keypair, (public, secret), each 40 Z85 characters."""
    require_curve()
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def key_bytes(name: str, value: str) -> bytes:
    """``value`` decoded from Z85 (32 bytes); ``CurveError`` naming ``name``, never the value."""
    try:
        if len(value) == KEY_CHARS:
            return z85.decode(value.encode("ascii"))
    except (UnicodeEncodeError, KeyError, struct.error):
        pass
    raise CurveError(f"{name} is not a CurveZMQ key ({KEY_CHARS} Z85 characters)")


@dataclass(frozen=True)
class CurveKeys:
    """What a worker needs to connect over tcp://: the hub's public key and the workers'
    keypair, Z85 text. The secret never shows in a repr (a ``WorkerSpec``'s included)."""

    server_public: str
    public: str
    secret: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """The variables a launcher sets for the worker."""
        return {
            CURVE_SERVER_KEY.name: self.server_public,
            CURVE_PUBLIC_KEY.name: self.public,
            CURVE_SECRET_KEY.name: self.secret,
        }

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        """Make ``socket`` a CURVE client of the hub; call before ``connect``."""
        require_curve()
        socket.setsockopt(zmq.CURVE_SERVERKEY, key_bytes(CURVE_SERVER_KEY.name, self.server_public))
        socket.setsockopt(zmq.CURVE_PUBLICKEY, key_bytes(CURVE_PUBLIC_KEY.name, self.public))
        socket.setsockopt(zmq.CURVE_SECRETKEY, key_bytes(CURVE_SECRET_KEY.name, self.secret))


def take_keys(environ: MutableMapping[str, str] | None = None) -> CurveKeys | None:
    """The keys in ``environ`` (default ``os.environ``), removed from it; None where none is
    set. Some set but not all, or one malformed: ``CurveError`` naming it."""
    env = os.environ if environ is None else environ
    values = {v.name: v.get(env) for v in CURVE_VARIABLES}
    for variable in CURVE_VARIABLES:
        env.pop(variable.name, None)
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise CurveError(f"CURVE keys given without {', '.join(missing)}")
    server, public, secret = (str(values[v.name]) for v in CURVE_VARIABLES)
    for variable, value in zip(CURVE_VARIABLES, (server, public, secret), strict=True):
        key_bytes(variable.name, value)
    return CurveKeys(server_public=server, public=public, secret=secret)
