"""Print every ok measurement of a store's newest campaign called NAME, one line each:
throughput (output tok/s), window (s), gross energy (J), each GPU's energy (J), flags,
and a data-parallel measurement's shards (window opening, Unix s; tok/s; J).

    python benchmarks/print_measurements.py lem.db h100-data-parallel-check
"""

from __future__ import annotations

import json
import sqlite3
import sys

from lem.protocol.result_payload import flat_payload


def main() -> None:
    store, name = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(store)
    row = db.execute(
        "SELECT id FROM campaigns WHERE name = ? ORDER BY created_at_unix_s DESC LIMIT 1", (name,)
    ).fetchone()
    if row is None:
        print(f"{name}: no such campaign in {store}")
        return
    rows = db.execute(
        "SELECT e.name, m.cycle, m.payload_json FROM measurements m JOIN experiments e"
        " ON e.id = m.experiment_id WHERE e.campaign_id = ? AND m.status = 'ok'"
        " ORDER BY e.position, m.cycle",
        (row[0],),
    )
    print(f"== {name} ({row[0]})")
    for experiment, cycle, payload in rows:
        m = flat_payload(json.loads(payload))  # nested (schema ≥ 5) or flat
        per_gpu = [(g["gpu_uuid"][:12], round(g["energy_j"] or 0.0, 1)) for g in m["gpu_energy"]]
        print(
            experiment, cycle, f"{m['output_tokens_per_s']:.1f} tok/s",
            f"{m['duration_s']:.2f} s", f"{m['energy_j']} J", per_gpu, m["flags"],
        )  # fmt: skip
        for s in m.get("shards", []):
            opened_s = s["window_started_at_unix_s"]
            print(
                "   shard", s["shard_index"], s["gpu_uuids"], f"opened {opened_s:.3f}",
                f"{s['duration_s']:.2f} s", f"{s['output_tokens_per_s']:.1f} tok/s", s["energy_j"],
            )  # fmt: skip


if __name__ == "__main__":
    main()
