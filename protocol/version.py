"""lem's own version, read from the installed distribution metadata."""

from __future__ import annotations

from importlib import metadata


def lem_version() -> str:
    """The ``lem`` distribution's version; ``0+unknown`` when it is not installed."""
    try:
        return metadata.version("lem")
    except metadata.PackageNotFoundError:
        return "0+unknown"
