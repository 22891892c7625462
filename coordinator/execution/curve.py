"""The hub's CurveZMQ side, for a tcp:// endpoint: keys made for the campaign and a ZAP
handler that admits only the campaign's worker key.

The ROUTER becomes a CURVE server with a fresh keypair; workers get the server's public key
and one client keypair made with it (``protocol/curve.py`` says how they travel). libzmq asks
the ZAP handler (RFC 27: a REP socket bound at ``inproc://zeromq.zap.01`` in the hub's
context) about every peer whose CURVE handshake got that far; the handler answers 200 only
for the campaign's client key over CURVE in lem's domain, 400 for anything else. A peer
without CURVE fails the handshake before that, one with another key is refused here: either
way libzmq drops the connection before any of its frames reaches the ROUTER, so nothing an
unauthenticated peer sends is ever decoded. ``ZAP_ENFORCE_DOMAIN`` makes libzmq refuse
every peer should the handler be missing.

The handler's socket is served by the hub's own I/O thread (polled beside the ROUTER), so
there is no authenticator thread to start or to leak.
"""

from __future__ import annotations

import structlog
import zmq

from lem.protocol.curve import CurveKeys, key_bytes, new_keypair, require_curve

log = structlog.get_logger("lem.hub")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq sends ZAP requests (RFC 27)
ZAP_VERSION = b"1.0"
DOMAIN = b"lem"
MAX_LOGGED_ADDRESSES = 1000  # a refused address is logged once; this many at most


class CurveServer:
    """The campaign's keys and the ZAP handler, bound in the hub's context ``ctx``.

    ``CurveError`` where libzmq has no CURVE."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        require_curve()
        self.public_key, self._secret_key = new_keypair()
        public, secret = new_keypair()
        self.worker_keys = CurveKeys(server_public=self.public_key, public=public, secret=secret)
        self._allowed = frozenset({key_bytes("the workers' public key", public)})
        self.refused = 0  # peers refused by the handler (those without CURVE never reach it)
        self._logged: set[bytes] = set()
        self.zap: zmq.Socket[bytes] = ctx.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        try:
            self.zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self.zap.close(linger=0)
            raise

    def secure(self, router: zmq.Socket[bytes]) -> None:
        """Make ``router`` a CURVE server that asks this handler; call before ``bind``."""
        router.setsockopt(zmq.ZAP_DOMAIN, DOMAIN)
        router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, key_bytes("the hub's secret key", self._secret_key))

    def answer(self) -> None:
        """Answer every pending ZAP request (call on the thread that polls ``zap``)."""
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            admitted, status = self._judge(request)
            request_id = request[1] if len(request) > 1 else b""
            user = b"lem-worker" if admitted else b""
            text = b"OK" if admitted else b"not the campaign's key"
            self.zap.send_multipart([ZAP_VERSION, request_id, status, text, user, b""])
            if not admitted:
                self._refused(request, status)

    def _judge(self, request: list[bytes]) -> tuple[bool, bytes]:
        """(admitted, status code): RFC 27's version, domain, address, routing id,
        mechanism and credentials after the request id."""
        if len(request) < 7 or request[0] != ZAP_VERSION:
            return False, b"500"  # not a ZAP request this handler understands
        domain, mechanism, credentials = request[2], request[5], request[6:]
        if domain == DOMAIN and mechanism == b"CURVE" and credentials[0] in self._allowed:
            return True, b"200"
        return False, b"400"

    def _refused(self, request: list[bytes], status: bytes) -> None:
        self.refused += 1
        address = request[3] if len(request) > 3 else b""
        if address in self._logged or len(self._logged) >= MAX_LOGGED_ADDRESSES:
            return
        self._logged.add(address)
        log.warning(
            "refused a peer: not the campaign's CURVE key",
            address=address.decode(errors="replace"),
            status=status.decode(errors="replace"),
        )

    def close(self) -> None:
        self.zap.close(linger=0)
