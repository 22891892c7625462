"""Different campaigns run at once into one store (issue 15's older guarantees): the
store is SQLite in WAL mode with a busy timeout and one ``BEGIN IMMEDIATE`` transaction
per write, so each campaign finishes and each stores its whole planned set, once — even
when all create the store file at the same moment."""

from __future__ import annotations

from pathlib import Path

from tests.faults.test_resume_faults import (
    campaign_file,
    query,
    sleep_backend,  # noqa: F401  (autouse fixture: the sleep engine)
    start_lem,
)

NAMES = ("one", "three", "two")


def test_campaigns_at_once_into_one_new_store_each_store_their_planned_set(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lem.db"
    files = []
    for name in NAMES:
        (tmp_path / name).mkdir()
        path = campaign_file(tmp_path / name, window_s=0.01, cycles=3)  # writes close together
        path.write_text(path.read_text().replace("name: faults", f"name: {name}"))
        files.append(path)
    coordinators = [start_lem("campaign", str(path), "--store", str(db)) for path in files]
    results = [(c.wait(120), c.communicate()[1]) for c in coordinators]
    assert [code for code, _ in results] == [0] * len(NAMES), results
    planned = sorted((name, p, c) for name in NAMES for p in (0, 1) for c in range(3))
    stored = query(
        db,
        "SELECT c.name, e.position, m.cycle FROM measurements m"
        " JOIN experiments e ON e.id = m.experiment_id JOIN campaigns c ON c.id = e.campaign_id"
        " WHERE m.status = 'ok' ORDER BY 1, 2, 3",
    )
    assert stored == planned  # each planned cycle once, under its own campaign
    assert query(db, "SELECT name, status FROM campaigns ORDER BY 1") == [
        (name, "finished") for name in NAMES
    ]
