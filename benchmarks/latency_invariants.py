"""Check the per-request latency rows of a result store with plain SQL and numpy.

For every measurement with requests: TTFT < end-to-end latency for every request, exactly
output tokens − 1 inter-token latencies per request, and the stored summary percentiles
equal to numpy's on the stored samples (float32 ITLs widened to float64, as lem computes
its summaries). Prints one JSON line per measurement and exits 1
if any check fails.

    python benchmarks/latency_invariants.py lem-results/lem.db
"""

from __future__ import annotations

import json
import sqlite3
import sys

import numpy as np

from lem.protocol.result_payload import flat_payload


def main() -> int:
    db = sqlite3.connect(sys.argv[1])
    failed = False
    query = (
        "SELECT m.id, e.name, m.payload_json FROM measurements m "
        "JOIN experiments e ON e.id = m.experiment_id WHERE m.status = 'ok' ORDER BY m.id"
    )
    for measurement_id, name, payload_json in db.execute(query):
        rows = db.execute(
            "SELECT output_tokens, ttft_ms, e2e_ms, itl_ms_f32le FROM request_latencies "
            "WHERE measurement_id = ?",
            (measurement_id,),
        ).fetchall()
        if not rows:
            continue
        payload = flat_payload(json.loads(payload_json))  # nested (schema ≥ 5) or flat
        itls_ms = [np.frombuffer(blob, dtype="<f4").astype(np.float64) for *_, blob in rows]
        all_itl_ms = np.concatenate(itls_ms) if itls_ms else np.array([])
        ttft_ms = np.array([r[1] for r in rows])
        ttft_below_e2e = sum(1 for _, ttft, e2e, _ in rows if ttft < e2e)
        itl_count_ok = sum(1 for r, itl in zip(rows, itls_ms, strict=True) if len(itl) == r[0] - 1)
        stored_itl = payload.get("itl_ms") or {}
        stored_ttft = payload.get("ttft_ms") or {}
        numpy_itl_p99 = float(np.percentile(all_itl_ms, 99)) if all_itl_ms.size else None
        numpy_ttft_p50 = float(np.percentile(ttft_ms, 50))
        result = {
            "experiment": name,
            "mode": payload.get("workload_mode"),
            "requests": len(rows),
            "ttft_below_e2e": ttft_below_e2e,
            "itl_count_ok": itl_count_ok,
            "ttft_p50_ms": stored_ttft.get("p50_ms"),
            "ttft_p50_ms_numpy": numpy_ttft_p50,
            "itl_p99_ms": stored_itl.get("p99_ms"),
            "itl_p99_ms_numpy": numpy_itl_p99,
            "tpot_p50_ms": (payload.get("tpot_ms") or {}).get("p50_ms"),
            "goodput": payload.get("goodput"),
            "tok_per_s": payload.get("output_tokens_per_s"),
            "j_per_tok": payload.get("energy_per_output_token_j"),
        }
        ok = (
            ttft_below_e2e == len(rows)
            and itl_count_ok == len(rows)
            and stored_ttft.get("p50_ms") == numpy_ttft_p50
            and (numpy_itl_p99 is None or stored_itl.get("p99_ms") == numpy_itl_p99)
        )
        result["ok"] = ok
        failed |= not ok
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
