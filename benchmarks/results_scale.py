"""The read side at campaign scale: stores of 1k, 10k and 100k experiments × 2 cycles.

Each store holds two campaigns, A and B, of N experiments each, built in SQL from a real
campaign's rows (by default a fresh run of configs/quickstart.yaml; ``--source STORE`` uses
another store's first campaign). Every copy keeps the source's config, provenance and
measurement payloads, with four swept axes written into its config (batch_size,
input_tokens, output_tokens, prompts.seed) and **synthetic** energies written into its
payload (a CPU quickstart has none; the read side must be timed with energy present). B is
A with energy moved by a few percent for one experiment in seven. Per-request latency rows
are not copied (they would make the 10k store about 1.4 GB; no command timed here reads them).

For each store it times, in a fresh process each (interpreter start included), the wall time
and the peak resident set (``ru_maxrss`` from ``wait4``) of:
``results list``, ``results show A``, ``results export A --format csv``,
``results export A --level experiment --format csv``, the JSON and Parquet exports,
``lem.load_results(store, A)`` at both levels, ``compare A B`` and ``report A -o DIR`` (with
the page's size: ``index.html``, which loads nothing else, and the folder's, whose
``experiments.csv`` is only linked). Prints a Markdown table.

    python benchmarks/results_scale.py [--sizes 1000 10000 100000] [--source STORE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEM = [sys.executable, "-m", "lem.coordinator"]

# Axes from the copy's index i: 8 × 5 × 5 × (N / 200) points.
_AXES = """
    (1 << (i % 8)) AS batch_size,
    128 * (1 + (i / 8) % 5) AS input_tokens,
    64 * (1 + (i / 40) % 5) AS output_tokens,
    i / 200 AS prompt_seed
"""
# Synthetic J/token: falls with batch size, rises with output length, ±3% scatter per cycle;
# campaign B moves one experiment in seven by +8%. Throughput rises with batch size.
_SCATTER = "(0.97 + ((i * 2654435761 + m.cycle * 40503 + :shift * 7919) % 1000) / 16666.0)"
_J_PER_TOKEN = f"""
    0.004 / (1 + (i % 8)) * (1 + out_cfg / 1024.0) * {_SCATTER}
    * (CASE WHEN :shift AND i % 7 = 3 THEN 1.08 ELSE 1.0 END)
"""
_TOKENS_PER_S = f"m.output_tokens_per_s * (1 + i % 8) * {_SCATTER}"


def quickstart_store(folder: Path) -> Path:
    """A store holding one run of configs/quickstart.yaml (about 30 s on a 2-core CPU)."""
    store = folder / "quickstart.db"
    cmd = [*LEM, "campaign", str(ROOT / "configs/quickstart.yaml"), "--store", str(store)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return store


def build_store(path: Path, source: Path, n: int) -> tuple[str, str]:
    """Campaigns A and B of ``n`` experiments × the source's cycles, at ``path``."""
    from lem.coordinator.store.results_store import Store

    with Store(path):  # an empty store at the current schema
        pass
    db = sqlite3.connect(path)
    db.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
    [(src_campaign,)] = db.execute(
        "SELECT id FROM src.campaigns ORDER BY created_at_unix_s LIMIT 1"
    ).fetchall()
    ids = (f"c-scale{n}-a", f"c-scale{n}-b")
    for campaign_id, shift in zip(ids, (False, True), strict=True):
        _copy_campaign(db, src_campaign, campaign_id, n, shift)
    db.commit()
    db.execute("DETACH DATABASE src")
    db.execute("VACUUM")
    db.close()
    return ids


def _copy_campaign(db: sqlite3.Connection, src: str, campaign_id: str, n: int, shift: bool) -> None:
    db.execute(
        "INSERT INTO campaigns (id, name, source_path, source_hash, source_text,"
        " coordinator_host, coordinator_pid, created_at_unix_s, finished_at_unix_s, status,"
        " experiment_count, cycles) SELECT ?, 'results-scale-synthetic', source_path,"
        " source_hash, source_text, coordinator_host, coordinator_pid, created_at_unix_s,"
        " finished_at_unix_s, 'finished', ?, cycles FROM src.campaigns WHERE id = ?",
        (campaign_id, n, src),
    )
    seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)"
    name = (
        "printf('bs=%d,in=%d,out=%d,seed=%d', batch_size, input_tokens, output_tokens, prompt_seed)"
    )
    db.execute(
        f"""{seq}, axes AS (SELECT i, {_AXES} FROM seq)
        INSERT INTO experiments (id, campaign_id, position, name, config_json, config_hash,
                                 load_key, provenance_json)
        SELECT printf('%s-e%07d', :cid, i), :cid, i, {name},
               json_set(e.config_json, '$.batch_size', batch_size, '$.input_tokens',
                        input_tokens, '$.output_tokens', output_tokens, '$.prompts.seed',
                        prompt_seed, '$.name', {name}),
               printf('%016x', i), e.load_key, e.provenance_json
        FROM axes, (SELECT * FROM src.experiments WHERE campaign_id = :src
                    ORDER BY position LIMIT 1) AS e""",
        {"n": n, "cid": campaign_id, "src": src},
    )
    columns = [
        r[1]
        for r in db.execute("PRAGMA main.table_info(measurements)")
        if r[1] not in _SET and r[1] != "experiment_id"
    ]
    copied = ", ".join(columns)
    from_source = ", ".join(f"m.{c}" for c in columns)
    db.execute(
        f"""WITH x AS (
            SELECT e.id AS eid, e.position AS i,
                   json_extract(e.config_json, '$.output_tokens') AS out_cfg
            FROM experiments e WHERE e.campaign_id = :cid),
        priced AS (
            SELECT x.eid, x.i, x.out_cfg, m.*, m.output_tokens AS tokens,
                   {_J_PER_TOKEN} AS jpt, {_TOKENS_PER_S} AS tps
            FROM x, (SELECT * FROM src.measurements WHERE experiment_id = (
                        SELECT id FROM src.experiments WHERE campaign_id = :src
                        ORDER BY position LIMIT 1) AND status = 'ok') AS m)
        INSERT INTO measurements (experiment_id, {copied}, energy_j, energy_per_output_token_j,
                                  avg_power_w, energy_unavailable_reason, output_tokens_per_s,
                                  payload_json)
        SELECT eid, {from_source}, jpt * tokens, jpt,
               jpt * tokens / duration_s, NULL, tps,
               json_set(payload_json, '$.experiment_id', eid,
                        '$.work.output_tokens_per_s', tps,
                        '$.energy.energy_j', jpt * tokens,
                        '$.energy.energy_per_output_token_j', jpt,
                        '$.energy.avg_power_w', jpt * tokens / duration_s,
                        '$.energy.energy_unavailable_reason', NULL)
        FROM priced AS m""",
        {"cid": campaign_id, "src": src, "shift": shift},
    )


# Columns the copy sets itself (the rest are copied from the source measurement).
_SET = {
    "id", "energy_j", "energy_per_output_token_j", "avg_power_w",
    "energy_unavailable_reason", "output_tokens_per_s", "payload_json",
}  # fmt: skip


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(f"{' '.join(cmd[3:])}: {proc.stderr.read().decode()[-500:]}\n")
    return wall, usage.ru_maxrss / 1024, proc.returncode


def measure(store: Path, a: str, b: str, folder: Path) -> list[tuple[str, float, float, str]]:
    env = {**os.environ, "COLUMNS": "160"}
    out = folder / "out"
    out.mkdir(exist_ok=True)
    s = str(store)
    load = f"import lem; df = lem.load_results({s!r}, {a!r}); print(len(df))"
    load_e = f"import lem; print(len(lem.load_results({s!r}, {a!r}, level='experiment')))"
    commands: list[tuple[str, list[str]]] = [
        ("results list", [*LEM, "results", "list", "--store", s]),
        ("results show A", [*LEM, "results", "show", a, "--store", s]),
        ("results export A (csv)", [*LEM, "results", "export", a, "--store", s,
                                    "--format", "csv", "-o", str(out / "m.csv")]),
        ("results export A --level experiment", [
            *LEM, "results", "export", a, "--store", s, "--level", "experiment",
            "--format", "csv", "-o", str(out / "e.csv")]),
        ("results export A (json)", [*LEM, "results", "export", a, "--store", s,
                                     "--format", "json", "-o", str(out / "m.json")]),
        ("results export A (parquet)", [*LEM, "results", "export", a, "--store", s,
                                        "--format", "parquet", "-o", str(out / "m.parquet")]),
        ("lem.load_results(store, A)", [sys.executable, "-c", load]),
        ("lem.load_results(store, A, level='experiment')", [sys.executable, "-c", load_e]),
        ("compare A B", [*LEM, "compare", a, b, "--store", s]),
        ("report A -o DIR", [*LEM, "report", a, "--store", s, "-o", str(out / "report")]),
    ]  # fmt: skip
    rows = []
    for label, cmd in commands:
        wall, rss, code = timed(cmd, env)
        note = "" if code == 0 else f"exit {code}"
        if label.startswith("report") and code == 0:
            folder_b = sum(p.stat().st_size for p in (out / "report").rglob("*") if p.is_file())
            page_b = (out / "report" / "index.html").stat().st_size
            note = f"page {page_b / 1e6:.2f} MB; folder {folder_b / 1e6:.1f} MB (CSV linked)"
        rows.append((label, wall, rss, note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--source", type=Path, help="a store whose first campaign is copied")
    parser.add_argument("--keep", type=Path, help="keep the built stores in this folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lem-scale-"))
    try:
        source = args.source or quickstart_store(folder)
        print(f"source: {source}; CPU count {os.cpu_count()}; python {sys.version.split()[0]}")
        print("\n| experiments × cycles | command | wall (s) | peak RSS (MiB) | note |")
        print("|---|---|---:|---:|---|")
        for n in args.sizes:
            store = (args.keep or folder) / f"scale-{n}.db"
            store.parent.mkdir(parents=True, exist_ok=True)
            store.unlink(missing_ok=True)
            started = time.perf_counter()
            a, b = build_store(store, source, n)
            built = time.perf_counter() - started
            size_mb = store.stat().st_size / 1e6
            print(f"| {n:,} × 2 | (store built in {built:.1f} s, {size_mb:.0f} MB) | | | |")
            for label, wall, rss, note in measure(store, a, b, folder):
                print(f"| {n:,} × 2 | `{label}` | {wall:.2f} | {rss:.0f} | {note} |", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
