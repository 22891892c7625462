"""A replayed H100 whose power limit and clocks can be set (``nvml_replay_settings.py``),
with what was set kept in ``LEM_NVML_REPLAY_STATE`` (a file of the test's tmp_path), so
other processes see it too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lem.protocol.devices import nvml
from lem.protocol.devices.nvml_replay import H100_CLOCKS_MHZ, uninstall_all
from lem.protocol.devices.nvml_replay_settings import State, replay_state

UUID = "GPU-00000000-0000-0000-0000-00000settable"
DEFAULT_LIMIT_W = 700.0  # the header's power_limit_mw: in force until one is set
SM_CLOCK_MHZ = 1755  # the trace's current SM clock


def write_trace(path: Path, **device: Any) -> Path:
    """A synthetic H100 (700 W limit; ``device`` adds header fields) drawing a steady
    100 W for 2 s."""
    header = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "driver": "580.95.05",
        "synthetic": True,
        "synthetic_because": "a GPU whose power limit and clocks tests set: lem must not "
        "change the lent H100's while tests run beside other work",
        "devices": [
            {"uuid": UUID, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85520809984,
             "power_limit_mw": 700_000, **device}
        ],
    }  # fmt: skip
    rows = [
        {"t_s": round(1 + i / 10, 1), "energy_mj": i * 10_000, "power_mw": 100_000,
         "sm_clock_mhz": SM_CLOCK_MHZ, "mem_clock_mhz": 2619, **H100_CLOCKS_MHZ}
        for i in range(20)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path


@dataclass
class SettableGpu:
    trace: Path
    state: Path

    def env(self) -> dict[str, str]:
        """The variables a process needs to see this GPU and what was set on it."""
        return {"LEM_NVML_REPLAY": str(self.trace), "LEM_NVML_REPLAY_STATE": str(self.state)}

    def calls(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = replay_state(self.state)["calls"]
        return found

    def read(self) -> State:
        return replay_state(self.state)


def settable_gpu_at(
    monkeypatch: pytest.MonkeyPatch, folder: Path, **device: Any
) -> Iterator[SettableGpu]:
    monkeypatch.setattr(nvml, "_init_count", 0)
    gpu = SettableGpu(write_trace(folder / "settable.jsonl", **device), folder / "state.json")
    for name, value in gpu.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LEM_NVML_REPLAY_REFUSE_SETS", raising=False)
    yield gpu
    uninstall_all()


@pytest.fixture
def settable_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SettableGpu]:
    """One replayed H100 (``UUID``) as lem's NVML, its settings shared through a file."""
    yield from settable_gpu_at(monkeypatch, tmp_path)
