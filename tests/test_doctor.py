"""``lem doctor`` probes every backend's interpreter side by side, while it asks NVML and the
rest about the host, and still reports every backend, in order, with nothing cached."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from rich.console import Console

from lem.coordinator.cli import doctor
from lem.protocol.devices.nvml import Inventory, inventory

WAIT_S = 10.0  # far longer than meeting takes; a sequential doctor never meets


def test_probes_run_side_by_side_and_beside_the_host_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every probe and the NVML inventory must be running at once to pass the barrier: done
    # one after the other, the first to arrive waits alone and the barrier breaks.
    meeting = threading.Barrier(len(doctor.BACKENDS) + 1, timeout=WAIT_S)
    probed: list[str] = []

    def probe(backend: str, timeout_s: float = 120.0, env: Any = None) -> dict[str, object]:
        meeting.wait()
        probed.append(backend)
        usable = backend == "pytorch"
        problem = "" if usable else f"cannot import {backend}-engine"
        return {"usable": usable, "problem": problem, "python_executable": f"/py/{backend}"}

    def host_inventory() -> Inventory:
        meeting.wait()
        return inventory()

    monkeypatch.setattr(doctor, "probe_backend", probe)
    monkeypatch.setattr(doctor, "inventory", host_inventory)
    out = io.StringIO()
    assert doctor.render_doctor(Console(file=out, width=200, color_system=None)) is True
    assert sorted(probed) == sorted(doctor.BACKENDS)  # each probed once
    rows = [line for line in out.getvalue().splitlines() if "/py/" in line]
    assert [row.split("│")[1].split()[0] for row in rows] == doctor.BACKENDS  # in order
    assert "cannot import vllm-engine" in out.getvalue()


def test_each_run_probes_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def probe(backend: str, timeout_s: float = 120.0, env: Any = None) -> dict[str, object]:
        calls.append(backend)
        return {"usable": False, "problem": "no", "python_executable": "/py"}

    monkeypatch.setattr(doctor, "probe_backend", probe)
    for _ in range(2):
        doctor.render_doctor(Console(file=io.StringIO(), width=200))
    assert sorted(calls) == sorted(doctor.BACKENDS * 2)
