"""The one wire codec: msgpack via msgspec, decoders typed to each union. No pickle."""

from __future__ import annotations

import msgspec

from lem.protocol.errors import LemError
from lem.protocol.messages import PROTOCOL_VERSION, Command, Event

_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_event_decoder = msgspec.msgpack.Decoder(Event)


class ProtocolError(LemError):
    """A frame that is not a valid message of the expected union."""


class VersionMismatch(ProtocolError):
    """A peer speaks another protocol version."""


def encode(message: Command | Event) -> bytes:
    return _encoder.encode(message)


def decode_command(frame: bytes) -> Command:
    try:
        return _command_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable command frame ({len(frame)} bytes): {exc}") from exc


def decode_event(frame: bytes) -> Event:
    try:
        return _event_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable event frame ({len(frame)} bytes): {exc}") from exc


def check_version(peer_version: int, peer: str) -> None:
    """Raise ``VersionMismatch`` with an actionable message unless versions match."""
    if peer_version != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"{peer} speaks lem protocol v{peer_version} but this coordinator speaks "
            f"v{PROTOCOL_VERSION}: install the same lem version in the worker's environment"
        )
