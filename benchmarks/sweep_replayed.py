"""A load sweep on CPU, end to end: the sleep engine as a server with ``--slots`` requests
generating at once (``LEM_SLEEP_SLOTS``), on a replayed H100 (``tests/data/h100_load.jsonl``,
a looped ~690 W), through ``lem campaign`` with ``workload.sweep``. Prints one row per
point: the offered rate, the probe's completed rate, whole-run and steady-state J/token
(the steady window: its edges, level and energy), the share of requests within the SLO and
the flags — the figures docs/measurements.md records for issue 17.

The replay's power does not follow the load: this checks the sweep, the saturation stop and
the steady-state windows end to end, not how much a steady window changes a real figure.

    python benchmarks/sweep_replayed.py --rates 3 --min-window-s 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEM = [sys.executable, "-m", "lem.coordinator"]


def campaign(args: argparse.Namespace) -> dict[str, object]:
    return {
        "name": "sweep-replayed",
        "experiment": {
            "model": {"source": "builtin", "name": "lem-tiny"},
            "device": "cuda",
            "num_prompts": args.num_requests,
            "input_tokens": 8,
            "output_tokens": args.output_tokens,
            "warmup_batches": 0,
            "min_window_s": args.min_window_s,
            "idle_baseline": {"window_s": 0.5, "cv_threshold": 0.5, "max_wait_s": 5},
            "slo": {"ttft_ms": args.ttft_slo_ms},
            "workload": {
                "mode": "server",
                "arrival": "poisson",
                "seed": 0,
                "sweep": {
                    "rates": args.rates,
                    "light_fraction": args.light,
                    "top_fraction": args.top,
                },
            },
        },
        "cycles": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=int, default=3)
    parser.add_argument("--light", type=float, default=0.2)
    parser.add_argument("--top", type=float, default=1.3)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--num-requests", type=int, default=100)
    parser.add_argument("--output-tokens", type=int, default=100)
    parser.add_argument("--min-window-s", type=float, default=60.0)
    parser.add_argument("--ttft-slo-ms", type=float, default=100.0)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lem-sweep-"))
    store = args.store or folder / "lem.db"
    spec = folder / "campaign.json"  # JSON is YAML
    spec.write_text(json.dumps(campaign(args), indent=1))
    env = {
        **os.environ,
        "LEM_NVML_REPLAY": str(ROOT / "tests" / "data" / "h100_load.jsonl"),
        "LEM_WORKER_BACKEND": "lem.workers.engines.sleep:SleepBackend",
        "LEM_SLEEP_SLOTS": str(args.slots),
    }
    done = subprocess.run([*LEM, "campaign", str(spec), "--store", str(store)], env=env)
    print_rows(store)
    sys.exit(done.returncode)


def print_rows(store: Path) -> None:
    from lem.coordinator.report.frontier import SLO_SHARE, slo_frontier, sweeps
    from lem.coordinator.report.gather import read_campaign
    from lem.coordinator.store.results_store import Store

    with Store.read_only(store) as opened:
        [campaign_row] = opened.list_campaigns()
        print("| point | offered req/s | completed req/s | whole J/token | steady J/token "
              "(window s, level) | within SLO | flags |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---|")
        for position in range(64):
            found = opened.experiment_at(campaign_row.id, position)
            if found is None:
                break
            experiment_id, config = found
            for record in opened.experiment_measurements(experiment_id):
                m = record.measurement
                if m is None:
                    print(f"| {config.name} | failed: {record.failure_reason} |")
                    continue
                steady = m.steady
                steady_text = (
                    f"{steady.steady_energy_per_output_token_j:.4f} "
                    f"({steady.steady_window_start_s:.1f}–{steady.steady_window_end_s:.1f}, "
                    f"{steady.steady_level:.3g})"
                    if steady.steady_energy_per_output_token_j is not None
                    and steady.steady_window_start_s is not None
                    and steady.steady_window_end_s is not None
                    and steady.steady_level is not None
                    else f"none: {steady.steady_unavailable_reason}"
                )
                whole = (
                    f"{m.energy.energy_j / m.work.output_tokens:.4f}"
                    if m.energy.energy_j is not None and m.work.output_tokens
                    else "-"
                )
                offered = config.workload.rate_per_s
                goodput = m.latency.goodput
                share = f"{goodput.good_share:.0%}" if goodput and goodput.good_share else "-"
                print(
                    f"| {config.name} | {offered if offered is not None else '-'} | "
                    f"{m.work.num_prompts / m.work.duration_s:.2f} | {whole} | {steady_text} | "
                    f"{share} | {', '.join(m.flags)} |"
                )
    [(_, _, points)] = sweeps(read_campaign(store, campaign_row.id))
    edge, best = slo_frontier(points)
    print(f"SLO share {SLO_SHARE:.0%}: highest load meeting it: "
          f"{edge.x if edge else None}; lowest J/token meeting it: "
          f"{best.j_per_token if best else None} at {best.x if best else None}")  # fmt: skip


if __name__ == "__main__":
    main()
