"""CPU package and DRAM energy over one window, from Linux RAPL powercap sysfs.

Zones live under ``/sys/class/powercap/intel-rapl:*`` (sub-zones ``intel-rapl:N:M``);
AMD exposes the same tree on recent kernels. Each zone's ``energy_uj`` is a cumulative
counter in microjoules that wraps to 0 after ``max_energy_range_uj`` microjoules.
``intel-rapl-mmio:*`` zones duplicate the MSR package zones and are deliberately ignored.

A ``package-N`` zone already contains its ``core``/``uncore`` sub-zones; ``dram`` is a
separate domain (a child of the package in the tree, but not part of its counter). Energy
is gross: idle draw and other processes' work are included. Unknown is None plus a
reason, never 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_ZONE_DIR = re.compile(r"^intel-rapl(:\d+)+$")
_PERMISSION_HINT = (
    "energy_uj is root-only on kernels since 5.10 (CVE-2020-8694, 'Platypus'); "
    "run as root or grant read access (e.g. a udev rule)"
)


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone: ``name`` from its ``name`` file (``package-0``, ``dram``, ``core``…).

    ``max_energy_range_uj`` is the counter's wrap range in microjoules (None if unreadable);
    ``unavailable_reason`` says why ``energy_uj`` could not be read at discovery, if so.
    """

    zone_id: str  # directory name, e.g. "intel-rapl:0:0"
    name: str
    path: Path
    max_energy_range_uj: int | None
    unavailable_reason: str | None = None


@dataclass(frozen=True)
class RaplDiscovery:
    """All RAPL zones found; ``unavailable_reason`` is set when no zone's counter is readable."""

    zones: tuple[RaplZone, ...]
    unavailable_reason: str | None


@dataclass(frozen=True)
class RaplZoneEnergy:
    """Energy of one zone over the window in joules, or None plus the reason."""

    zone_id: str
    name: str
    energy_j: float | None
    wrapped: bool  # True when one counter wraparound was corrected
    unavailable_reason: str | None


@dataclass(frozen=True)
class RaplEnergy:
    """Per-zone energy and totals in joules: CPU (sum of ``package-*``) and DRAM (``dram``)."""

    zones: tuple[RaplZoneEnergy, ...]
    cpu_energy_j: float | None
    cpu_unavailable_reason: str | None
    dram_energy_j: float | None
    dram_unavailable_reason: str | None


def _read_uj(path: Path) -> int | str:
    """An integer counter file in microjoules, or the reason it cannot be read."""
    try:
        text = path.read_text()
    except PermissionError as exc:
        return f"{path} is not readable ({exc.strerror}): {_PERMISSION_HINT}"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or type(exc).__name__})"
    try:
        return int(text.strip())
    except ValueError:
        return f"{path} does not hold an integer: {text.strip()[:40]!r}"


def _zone_sort_key(zone_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in zone_id.split(":")[1:])


def _zone_dirs(root: Path) -> dict[str, Path]:
    """Zone directories by id, top-level and nested (real sysfs has both; ids are unique)."""
    found: dict[str, Path] = {}
    pending = [root]
    while pending:
        parent = pending.pop()
        try:
            children = sorted(parent.iterdir())
        except OSError:
            continue
        for child in children:
            if _ZONE_DIR.match(child.name) and child.is_dir() and child.name not in found:
                found[child.name] = child
                pending.append(child)
    return found


def _load_zone(zone_id: str, path: Path) -> RaplZone:
    try:
        name = (path / "name").read_text().strip() or zone_id
    except OSError:
        name = zone_id
    max_range = _read_uj(path / "max_energy_range_uj")
    energy = _read_uj(path / "energy_uj")
    return RaplZone(
        zone_id=zone_id,
        name=name,
        path=path,
        max_energy_range_uj=max_range if isinstance(max_range, int) else None,
        unavailable_reason=energy if isinstance(energy, str) else None,
    )


def discover_rapl_zones(root: Path = Path("/sys/class/powercap")) -> RaplDiscovery:
    """Find every RAPL zone under ``root`` and check its ``energy_uj`` can be read. Never raises."""
    try:
        if not root.is_dir():
            return RaplDiscovery((), f"no powercap sysfs tree at {root}")
        dirs = _zone_dirs(root)
        if not dirs:
            return RaplDiscovery((), f"no RAPL zone (intel-rapl:*) under {root}")
        zones = tuple(_load_zone(z, dirs[z]) for z in sorted(dirs, key=_zone_sort_key))
    except Exception as exc:  # never raise: discovery must not break a run
        return RaplDiscovery((), f"RAPL discovery failed: {type(exc).__name__}: {exc}")
    if all(z.unavailable_reason is not None for z in zones):
        reasons = dict.fromkeys(str(z.unavailable_reason) for z in zones)
        return RaplDiscovery(zones, "no RAPL counter is readable: " + "; ".join(reasons))
    return RaplDiscovery(zones, None)


class RaplMeter:
    """Reads every zone's ``energy_uj`` (microjoules) at ``begin`` and ``end``.

    Wraparound: a counter that reads lower at ``end`` than at ``begin`` is taken to have
    wrapped exactly once, and ``max_energy_range_uj`` is added (the exact wrap is one
    energy unit, ~15–61 µJ, more; negligible). More than one wrap cannot be detected:
    keep windows shorter than one wrap period, ``max_energy_range_uj / 1e6 / power_W``
    seconds — e.g. a 262 kJ range at 200 W wraps every ~22 min, a 65.5 kJ range (AMD,
    some DRAM domains) at 250 W every ~4.4 min.
    """

    def __init__(self, zones: Sequence[RaplZone]) -> None:
        self._zones = tuple(zones)
        self._begin_uj: dict[str, int | str] | None = None
        self._end_uj: dict[str, int | str] | None = None

    def _read_all(self) -> dict[str, int | str]:
        return {z.zone_id: _read_uj(z.path / "energy_uj") for z in self._zones}

    def begin(self) -> None:
        """Read every zone's counter at the window's start (clears any earlier end)."""
        self._begin_uj = self._read_all()
        self._end_uj = None

    def end(self) -> None:
        """Read every zone's counter at the window's end."""
        self._end_uj = self._read_all()

    def _zone_energy(self, zone: RaplZone) -> RaplZoneEnergy:
        if self._begin_uj is None or self._end_uj is None:
            return RaplZoneEnergy(
                zone.zone_id, zone.name, None, False, "the window never began or never ended"
            )
        start, stop = self._begin_uj[zone.zone_id], self._end_uj[zone.zone_id]
        for reading, edge in ((start, "begin"), (stop, "end")):
            if isinstance(reading, str):
                return RaplZoneEnergy(zone.zone_id, zone.name, None, False, f"at {edge}: {reading}")
        assert isinstance(start, int) and isinstance(stop, int)
        delta_uj, wrapped = stop - start, False
        if delta_uj < 0:
            if zone.max_energy_range_uj is None:
                reason = "counter wrapped but max_energy_range_uj is unknown"
                return RaplZoneEnergy(zone.zone_id, zone.name, None, False, reason)
            delta_uj, wrapped = delta_uj + zone.max_energy_range_uj, True
            if delta_uj < 0:
                reason = f"counter went back by more than max_energy_range_uj ({start}→{stop})"
                return RaplZoneEnergy(zone.zone_id, zone.name, None, False, reason)
        return RaplZoneEnergy(zone.zone_id, zone.name, delta_uj / 1e6, wrapped, None)

    def result(self) -> RaplEnergy:
        """Per-zone joules and the CPU/DRAM totals in joules (None plus reason if unknown)."""
        per_zone = tuple(self._zone_energy(z) for z in self._zones)
        cpu_j, cpu_reason = _total([e for e in per_zone if e.name.startswith("package")], "package")
        dram_j, dram_reason = _total([e for e in per_zone if e.name == "dram"], "dram")
        return RaplEnergy(per_zone, cpu_j, cpu_reason, dram_j, dram_reason)


def _total(zones: list[RaplZoneEnergy], kind: str) -> tuple[float | None, str | None]:
    """Sum of the zones' joules, or None with the first failing zone's reason."""
    if not zones:
        return None, f"no RAPL {kind} zone"
    for zone in zones:
        if zone.energy_j is None:
            return None, f"{zone.zone_id} ({zone.name}): {zone.unavailable_reason}"
    return sum(z.energy_j for z in zones if z.energy_j is not None), None
