"""Energies beside the measured window's GPU energy: the model load's (``preparation``),
the host's CPU and DRAM from RAPL (``host_energy``) and the carbon of the window's."""

from __future__ import annotations

from typing import Any

from lem.protocol.devices.rapl import RaplDiscovery, RaplMeter
from lem.workers.engines.base import GenerationStats
from lem.workers.metering.energy import EnergyWindow

CPU_RUN_REASON = "the experiment ran on CPU: lem has no CPU energy meter yet"
REUSED_REASON = "model reused: loaded by an earlier cycle on this worker"
NO_GPU_REASON = "no GPU was assigned to this worker"


def load_energy(
    window: EnergyWindow | None, stats: GenerationStats, gpu_uuids: list[str]
) -> dict[str, Any]:
    """``load_energy_j`` (gross GPU energy of the model load) or None with the reason."""
    if not gpu_uuids:
        reason: str | None = NO_GPU_REASON
    elif window is None or stats.device == "cpu":
        reason = CPU_RUN_REASON
    elif stats.model_reused:
        reason = REUSED_REASON
    else:
        result = window.result()
        return {
            "load_energy_j": result.energy_j,
            "load_energy_unavailable_reason": result.unavailable_reason,
        }
    return {"load_energy_j": None, "load_energy_unavailable_reason": reason}


J_PER_KWH = 3.6e6


def carbon(energy_j: float | None, intensity_g_per_kwh: float | None) -> dict[str, Any]:
    """``carbon_g`` (gCO2e) of the gross GPU energy, or None with the reason."""
    if energy_j is None:
        return {"carbon_g": None, "carbon_unavailable_reason": "no GPU energy"}
    if intensity_g_per_kwh is None:
        why = "grid_intensity_g_per_kwh is not set (lem has no default intensity)"
        return {"carbon_g": None, "carbon_unavailable_reason": why}
    return {
        "carbon_g": energy_j / J_PER_KWH * intensity_g_per_kwh,
        "carbon_unavailable_reason": None,
    }


def rapl_meter(discovery: RaplDiscovery | None) -> RaplMeter | None:
    if discovery is None or discovery.unavailable_reason is not None:
        return None
    return RaplMeter(discovery.zones)


def host_energy(meter: RaplMeter | None, discovery: RaplDiscovery | None) -> dict[str, Any]:
    """CPU package and DRAM energy (J) of the window from RAPL, or None with the reason."""
    if meter is None:
        why = discovery.unavailable_reason if discovery else "CPU/DRAM energy not measured"
        return {
            "cpu_energy_j": None,
            "cpu_energy_unavailable_reason": why,
            "dram_energy_j": None,
            "dram_energy_unavailable_reason": why,
        }
    result = meter.result()
    return {
        "cpu_energy_j": result.cpu_energy_j,
        "cpu_energy_unavailable_reason": result.cpu_unavailable_reason,
        "dram_energy_j": result.dram_energy_j,
        "dram_energy_unavailable_reason": result.dram_unavailable_reason,
    }
