"""RAPL powercap energy from a fake sysfs tree: joules, wraparound, None plus a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from lem.protocol.devices.rapl import RaplMeter, RaplZone, discover_rapl_zones

MAX_RANGE_UJ = 262_143_328_850


def make_zone(parent: Path, zone_id: str, name: str, energy_uj: int | None) -> Path:
    """A zone directory; ``energy_uj=None`` leaves the counter file out."""
    zone = parent / zone_id
    zone.mkdir()
    (zone / "name").write_text(name + "\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    if energy_uj is not None:
        (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


def set_uj(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two packages (one with dram and core sub-zones), a psys zone and an mmio duplicate."""
    root = tmp_path / "powercap"
    root.mkdir()
    pkg0 = make_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(pkg0, "intel-rapl:0:0", "core", 500_000)
    make_zone(pkg0, "intel-rapl:0:1", "dram", 2_000_000)
    make_zone(root, "intel-rapl:1", "package-1", 3_000_000)
    make_zone(root, "intel-rapl:2", "psys", 0)
    make_zone(root, "intel-rapl-mmio:0", "package-0", 0)
    (root / "intel-rapl").mkdir()  # the control-type directory, not a zone
    return root


def test_discovery_finds_nested_zones_in_order(tree: Path) -> None:
    found = discover_rapl_zones(tree)
    assert found.unavailable_reason is None
    assert [(z.zone_id, z.name) for z in found.zones] == [
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:0", "core"),
        ("intel-rapl:0:1", "dram"),
        ("intel-rapl:1", "package-1"),
        ("intel-rapl:2", "psys"),
    ]
    assert all(z.max_energy_range_uj == MAX_RANGE_UJ for z in found.zones)
    assert found.zones[2].path == tree / "intel-rapl:0" / "intel-rapl:0:1"


def test_flat_symlinked_layout_is_not_double_counted(tree: Path) -> None:
    # Real sysfs also lists every sub-zone at the top level (as a symlink).
    (tree / "intel-rapl:0:1").symlink_to(tree / "intel-rapl:0" / "intel-rapl:0:1")
    ids = [z.zone_id for z in discover_rapl_zones(tree).zones]
    assert ids.count("intel-rapl:0:1") == 1


def test_normal_window_gives_joules_and_totals(tree: Path) -> None:
    meter = RaplMeter(discover_rapl_zones(tree).zones)
    meter.begin()
    set_uj(tree / "intel-rapl:0", 1_000_000 + 12_500_000)
    set_uj(tree / "intel-rapl:0" / "intel-rapl:0:0", 500_000 + 7_000_000)
    set_uj(tree / "intel-rapl:0" / "intel-rapl:0:1", 2_000_000 + 1_250_000)
    set_uj(tree / "intel-rapl:1", 3_000_000 + 2_500_000)
    meter.end()
    result = meter.result()
    by_name = {z.name: z.energy_j for z in result.zones}
    assert by_name == {"package-0": 12.5, "core": 7.0, "dram": 1.25, "package-1": 2.5, "psys": 0.0}
    assert result.cpu_energy_j == pytest.approx(15.0)  # packages only: core is inside them
    assert result.dram_energy_j == pytest.approx(1.25)
    assert result.cpu_unavailable_reason is None and result.dram_unavailable_reason is None
    assert not any(z.wrapped for z in result.zones)


def test_wrapped_counter_is_corrected(tree: Path) -> None:
    pkg0 = tree / "intel-rapl:0"
    set_uj(pkg0, MAX_RANGE_UJ - 1_000_000)
    meter = RaplMeter(discover_rapl_zones(tree).zones)
    meter.begin()
    set_uj(pkg0, 3_000_000)
    meter.end()
    zone = meter.result().zones[0]
    assert zone.name == "package-0"
    assert zone.wrapped
    assert zone.energy_j == pytest.approx(4.0)
    assert meter.result().cpu_energy_j == pytest.approx(4.0)


def test_wrap_without_known_range_is_none_with_reason(tmp_path: Path) -> None:
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    meter = RaplMeter([RaplZone("intel-rapl:0", "package-0", zone, None)])
    meter.begin()
    set_uj(zone, 1_000_000)
    meter.end()
    result = meter.result()
    assert result.cpu_energy_j is None
    assert "max_energy_range_uj" in str(result.cpu_unavailable_reason)


def test_missing_tree_gives_reason(tmp_path: Path) -> None:
    found = discover_rapl_zones(tmp_path / "absent")
    assert found.zones == ()
    assert "no powercap" in str(found.unavailable_reason)
    result = RaplMeter(found.zones).result()
    assert result.cpu_energy_j is None and result.dram_energy_j is None
    assert result.cpu_unavailable_reason and result.dram_unavailable_reason


def test_tree_without_rapl_zones_gives_reason(tmp_path: Path) -> None:
    (tmp_path / "dtpm").mkdir()
    found = discover_rapl_zones(tmp_path)
    assert found.zones == ()
    assert "no RAPL zone" in str(found.unavailable_reason)


@pytest.mark.parametrize("breakage", ["missing", "directory"])
def test_unreadable_counter_gives_reason(tmp_path: Path, breakage: str) -> None:
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", None)
    if breakage == "directory":
        (zone / "energy_uj").mkdir()
    found = discover_rapl_zones(tmp_path)
    assert [z.name for z in found.zones] == ["package-0"]
    assert "energy_uj" in str(found.unavailable_reason)
    assert found.zones[0].unavailable_reason is not None
    meter = RaplMeter(found.zones)
    meter.begin()
    meter.end()
    result = meter.result()
    assert result.cpu_energy_j is None
    assert "energy_uj" in str(result.cpu_unavailable_reason)


def test_permission_reason_mentions_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    real_read_text = Path.read_text

    def deny(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self)

    monkeypatch.setattr(Path, "read_text", deny)
    reason = str(discover_rapl_zones(tmp_path).unavailable_reason)
    assert "Permission denied" in reason and "root" in reason


def test_read_failing_mid_window_nulls_that_zone_and_its_total(tree: Path) -> None:
    meter = RaplMeter(discover_rapl_zones(tree).zones)
    meter.begin()
    (tree / "intel-rapl:1" / "energy_uj").unlink()
    set_uj(tree / "intel-rapl:0" / "intel-rapl:0:1", 2_000_000 + 500_000)
    meter.end()
    result = meter.result()
    pkg1 = next(z for z in result.zones if z.name == "package-1")
    assert pkg1.energy_j is None and "at end" in str(pkg1.unavailable_reason)
    assert result.cpu_energy_j is None  # never a partial sum, never 0
    assert "intel-rapl:1" in str(result.cpu_unavailable_reason)
    assert result.dram_energy_j == pytest.approx(0.5)


def test_no_dram_zone_is_none_not_zero(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 0)  # AMD: package and core only
    meter = RaplMeter(discover_rapl_zones(tmp_path).zones)
    meter.begin()
    meter.end()
    result = meter.result()
    assert result.cpu_energy_j == 0.0
    assert result.dram_energy_j is None and "no RAPL dram zone" in str(
        result.dram_unavailable_reason
    )


def test_result_before_end_is_none_with_reason(tree: Path) -> None:
    meter = RaplMeter(discover_rapl_zones(tree).zones)
    meter.begin()
    result = meter.result()
    assert result.cpu_energy_j is None
    assert "never" in str(result.cpu_unavailable_reason)


def test_this_machines_powercap_is_handled_without_raising() -> None:
    found = discover_rapl_zones()
    meter = RaplMeter(found.zones)
    meter.begin()
    meter.end()
    result = meter.result()
    if found.unavailable_reason is not None:
        assert found.unavailable_reason.strip()
    for total, reason in (
        (result.cpu_energy_j, result.cpu_unavailable_reason),
        (result.dram_energy_j, result.dram_unavailable_reason),
    ):
        assert (total is None) != (reason is None)
        assert reason is not None or (isinstance(total, float) and total >= 0.0)
