"""``python -m lem.workers.runtime.probe BACKEND``: print, as JSON, whether BACKEND can run here.

Run by ``lem doctor`` in the backend's own interpreter, so the coordinator learns engine
versions without importing any engine itself.
"""

from __future__ import annotations

import importlib
import platform
import sys

import msgspec

from lem.protocol.engines.registry import ENGINES
from lem.workers.runtime.versions import distribution_versions

# What each backend's worker imports: its engine's ``environment.probe_imports``.
REQUIREMENTS = {engine.name: list(engine.environment.probe_imports) for engine in ENGINES}


class ProbeReport(msgspec.Struct, kw_only=True):
    backend: str
    python_executable: str
    python_version: str
    packages: dict[str, str]
    usable: bool
    problem: str | None
    cuda_device_count: int | None


def probe(backend: str) -> ProbeReport:
    names = REQUIREMENTS.get(backend, [])
    problem = None
    cuda_devices = None
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a broken install
            problem = f"cannot import {name}: {exc}"
            break
    if problem is None and "torch" in names:
        import torch

        cuda_devices = torch.cuda.device_count()
    return ProbeReport(
        backend=backend,
        python_executable=sys.executable,
        python_version=platform.python_version(),
        packages=distribution_versions([*names, "msgspec", "pyzmq", "lem"]),
        usable=problem is None and backend in REQUIREMENTS,
        problem=problem if backend in REQUIREMENTS else f"unknown backend {backend!r}",
        cuda_device_count=cuda_devices,
    )


if __name__ == "__main__":
    sys.stdout.buffer.write(msgspec.json.encode(probe(sys.argv[1])) + b"\n")
