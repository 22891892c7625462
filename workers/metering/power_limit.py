"""The power limit in force during a measurement.

The worker describes its GPUs once, at start (``Environment.gpus``); the coordinator may
change their power limits between cycles (``protocol/devices/gpu_settings.py``). So each
measurement reads the limit again, once, before its cycle starts (off the hot path: one
NVML query per GPU), and records the environment with it. A changed limit makes another
environment, which the store keeps as its own row.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from lem.protocol.results import Environment


class PowerLimitReader(Protocol):
    def read_power_limit_w(self, uuid: str) -> float | None:
        """The limit in force on the GPU, W; None where NVML cannot say."""


def with_power_limits(environment: Environment, reader: PowerLimitReader | None) -> Environment:
    """``environment`` with each GPU's power limit as ``reader`` reads it now; where it
    cannot be read, the limit read at start stands (the same NVML query failed then too)."""
    if reader is None or not environment.gpus:
        return environment
    gpus = []
    for gpu in environment.gpus:
        limit_w = reader.read_power_limit_w(gpu.uuid)
        if limit_w is not None and limit_w != gpu.power_limit_w:
            gpu = msgspec.structs.replace(gpu, power_limit_w=limit_w)
        gpus.append(gpu)
    if gpus == environment.gpus:
        return environment
    return msgspec.structs.replace(environment, gpus=gpus)
