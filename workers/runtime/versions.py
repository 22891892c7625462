"""Installed package versions, read from distribution metadata (nothing is imported)."""

from __future__ import annotations

from importlib import metadata


def distribution_versions(names: list[str]) -> dict[str, str]:
    """Version of each installed distribution in ``names``; absent ones are left out."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
