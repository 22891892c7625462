"""Resumes of one campaign started together: one runs it, the others exit 2 (issue 15)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.faults.test_resume_faults import (
    PLANNED,
    campaign_file,
    ok_pairs,
    query,
    sleep_backend,  # noqa: F401  (autouse fixture: the sleep engine)
    start_lem,
    stored_ok,
    wait_until,
)


def test_resumes_started_together_run_the_campaign_once(tmp_path: Path) -> None:
    path, db = campaign_file(tmp_path, window_s=0.3), tmp_path / "lem.db"
    first = start_lem("campaign", str(path), "--store", str(db))
    wait_until(lambda: stored_ok(db) >= 1, 30, "a first stored result")
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=30)
    [(campaign_id, status)] = query(db, "SELECT id, status FROM campaigns")
    assert status == "interrupted"
    before = stored_ok(db)

    resumes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lem.coordinator",
                "resume",
                str(campaign_id),
                "--store",
                str(db),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(120), p.communicate()[1]) for p in resumes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2, 2], results  # one runs it; each other exits 2 with one line
    for refusal in [err for code, err in results if code == 2]:
        lines = refusal.strip().splitlines()
        assert len(lines) == 1 and "still being run by lem (pid" in lines[0], refusal
    assert ok_pairs(db) == sorted(PLANNED) and before < len(PLANNED)
    assert query(db, "SELECT status FROM campaigns") == [("finished",)]
