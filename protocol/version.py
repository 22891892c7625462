"""lem's own version, read from the installed distribution metadata."""

from __future__ import annotations

from importlib import metadata


def lem_version() -> str:
    try:
        return metadata.version("lem")
    except metadata.PackageNotFoundError:
        return "0+unknown"
