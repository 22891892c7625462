"""Record the golden set (tests/golden/expected/) from the lem checked out here.

    python -m tests.golden.record                 # every campaign, 3 runs each
    python -m tests.golden.record sleep-replay    # one campaign (a name of campaigns/)
    python -m tests.golden.record --old-store     # store-main.db and its export instead
    ... --force                                   # overwrite what is recorded

Each campaign runs ``--runs`` times (default 3; the resumed campaign also killed and
resumed each time) and is recorded only when every run projects to the same thing: a
projection that differs between runs of the same code is a flaw of the rule, not a
result. Nothing is overwritten without ``--force``: the recorded files are what lem did
before issue 14's restructuring, so re-record only a change you mean to make.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from tests.golden.harness import (
    CAMPAIGNS,
    EXPECTED_DIR,
    OLD_STORE,
    OLD_STORE_EXPORT,
    Campaign,
    campaign_env,
    campaign_id_of,
    differences,
    dump,
    export,
    lem_ok,
    project_store,
    resumed_as_straight,
    run_campaign,
)

# The old store: small campaigns on the sleep engine and the replayed H100, one store.
OLD_STORE_CAMPAIGNS = ("sleep-replay", "data-parallel")


def _record_campaigns(names: list[str], runs: int, force: bool, folder: Path) -> int:
    groups: dict[str, list[Campaign]] = {}
    for c in CAMPAIGNS:
        if not names or c.name in names or campaign_id_of(c) in names:
            groups.setdefault(c.expected or c.name, []).append(c)
    unknown = set(names) - {c.name for c in CAMPAIGNS} - {campaign_id_of(c) for c in CAMPAIGNS}
    if unknown or not groups:
        print(f"unknown campaign(s): {sorted(unknown)}", file=sys.stderr)
        return 2
    existing = [g for g, cs in groups.items() if cs[0].expected_file.exists()]
    if existing and not force:
        print(f"already recorded (use --force to overwrite): {existing}", file=sys.stderr)
        return 2
    failed = False
    for group, campaigns in groups.items():
        projections = []
        for run in range(runs):
            for c in campaigns:
                started_s = time.monotonic()
                store = run_campaign(c, folder / f"run{run}")
                projection = project_store(store)
                notes: list[str] = []
                if c.interrupt:
                    projection, notes = resumed_as_straight(projection)
                took_s = time.monotonic() - started_s
                print(f"{campaign_id_of(c)} run {run}: {took_s:.1f} s {' '.join(notes)}")
                projections.append((f"{campaign_id_of(c)} run {run}", projection))
        (first_label, first), *others = projections
        unstable = [(label, differences(first, p)) for label, p in others]
        unstable = [(label, d) for label, d in unstable if d]
        if unstable:
            failed = True
            for label, problems in unstable:
                print(f"{group}: {label} differs from {first_label}:", *problems, sep="\n")
            continue
        EXPECTED_DIR.mkdir(exist_ok=True)
        campaigns[0].expected_file.write_text(dump(first))
        print(f"wrote {campaigns[0].expected_file} ({len(projections)} identical projections)")
    return 1 if failed else 0


def _record_old_store(force: bool, folder: Path) -> int:
    if (OLD_STORE.exists() or OLD_STORE_EXPORT.exists()) and not force:
        print(f"already recorded (use --force): {OLD_STORE}", file=sys.stderr)
        return 2
    store = folder / "old" / "lem.db"
    for name in OLD_STORE_CAMPAIGNS:
        [campaign] = [c for c in CAMPAIGNS if c.name == name and not c.interrupt]
        lem_ok("campaign", str(campaign.file), "--store", str(store),
               env=campaign_env(campaign, folder))  # fmt: skip
    conn = sqlite3.connect(store)  # lem left it checkpointed: nothing beside it to carry
    conn.close()
    leftovers = [p.name for p in store.parent.iterdir() if p.name.startswith("lem.db-")]
    if leftovers:
        print(f"the store has {leftovers} beside it: not a single file", file=sys.stderr)
        return 1
    exported = {level: export(store, level) for level in ("measurement", "experiment")}
    shutil.copyfile(store, OLD_STORE)
    EXPECTED_DIR.mkdir(exist_ok=True)
    OLD_STORE_EXPORT.write_text(dump(exported))
    size_kib = OLD_STORE.stat().st_size / 1024
    print(f"wrote {OLD_STORE} ({size_kib:.0f} KiB) and {OLD_STORE_EXPORT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden.record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help="campaigns to record (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs that must agree (default 3)")
    parser.add_argument("--force", action="store_true", help="overwrite recorded files")
    parser.add_argument("--old-store", action="store_true", help="record store-main.db")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="lem-golden-") as tmp:
        folder = args.keep or Path(tmp)
        if args.old_store:
            return _record_old_store(args.force, folder)
        return _record_campaigns(args.names, args.runs, args.force, folder)


if __name__ == "__main__":
    sys.exit(main())
