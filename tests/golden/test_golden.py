"""Issue 14's "behaviour is unchanged": the golden campaigns store what they stored before
the restructuring (expected/, recorded by ``python -m tests.golden.record``), and a store
written before it (store-main.db) still opens and reads the same. The projection rule is
tests/golden/harness.py's module doc."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.golden.harness import (
    CAMPAIGNS,
    OLD_STORE,
    OLD_STORE_EXPORT,
    Campaign,
    campaign_id_of,
    differences,
    export,
    lem,
    lem_ok,
    load_expected,
    project_store,
    resumed_as_straight,
    run_campaign,
)

RERECORD = "re-record only a deliberate change: python -m tests.golden.record --force {}"
LATE = (
    "net_energy_clamped appeared: if nothing in lem changed there, a worker's idle baseline "
    "ran into the replay's load part (a machine too loaded: harness.py, IDLE_S)"
)


@pytest.mark.slow
@pytest.mark.parametrize("campaign", CAMPAIGNS, ids=campaign_id_of)
def test_the_campaign_stores_the_golden_results(campaign: Campaign, tmp_path: Path) -> None:
    expected = load_expected(campaign.expected_file)
    actual = project_store(run_campaign(campaign, tmp_path))
    if campaign.interrupt:
        actual, _ = resumed_as_straight(actual)
    problems = differences(expected, actual)
    if problems:
        head = f"{campaign_id_of(campaign)}: the export differs from {campaign.expected_file.name}"
        hint = [LATE] if any("net_energy_clamped" in p for p in problems) else []
        lines = [f"{head} ({RERECORD.format(campaign.name)}):", *problems, *hint]
        pytest.fail("\n".join(lines), False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_schema_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows less ``schema_version``: a later lem reads an upgraded copy (checked
    separately)."""
    return [{k: v for k, v in r.items() if k != "schema_version"} for r in rows]


def test_a_store_written_before_the_restructuring_opens_and_reads(tmp_path: Path) -> None:
    committed = _sha256(OLD_STORE)
    # Read a copy: opening a store brings it to the current schema (results_table.py:
    # open_for_reading), which a later lem may have to write.
    copy = tmp_path / "store" / "lem.db"
    copy.parent.mkdir()
    shutil.copyfile(OLD_STORE, copy)
    store = ["--store", str(copy)]
    expected = load_expected(OLD_STORE_EXPORT)
    campaigns = list(dict.fromkeys(r["campaign_id"] for r in expected["measurement"]))
    names = list(dict.fromkeys(r["campaign_name"] for r in expected["measurement"]))

    listed = lem_ok("results", "list", *store)
    assert all(c in listed for c in campaigns), listed
    actual = {level: export(copy, level) for level in ("measurement", "experiment")}
    problems = differences(
        {level: _without_schema_version(rows) for level, rows in expected.items()},
        {level: _without_schema_version(rows) for level, rows in actual.items()},
    )
    if problems:
        pytest.fail("\n".join([f"{OLD_STORE.name} reads differently:", *problems]), False)
    for campaign_id, name in zip(campaigns, names, strict=True):
        shown = lem_ok("results", "show", campaign_id, *store)
        assert campaign_id in shown and name in shown, shown
        compared = lem("compare", campaign_id, campaign_id, *store)
        assert compared.returncode == 0, compared.stderr
        if importlib.util.find_spec("matplotlib") is not None:
            report = tmp_path / f"report-{campaign_id}"
            lem_ok("report", campaign_id, "-o", str(report), *store)
            assert (report / "index.html").stat().st_size > 0
    unknown = lem("results", "show", "c-none", *store)
    assert unknown.returncode != 0

    assert _sha256(OLD_STORE) == committed
    versions = {r["schema_version"] for r in expected["measurement"]}
    upgraded = {r["schema_version"] for r in actual["measurement"]} != versions
    if not upgraded:  # no schema upgrade: reading must not have written a byte
        assert _sha256(copy) == _sha256(OLD_STORE)
