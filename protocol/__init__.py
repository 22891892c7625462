"""lem's wire protocol, configuration and result types (no GPU library is imported here)."""

from lem.protocol.messages import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
