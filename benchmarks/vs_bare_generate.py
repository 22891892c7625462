"""lem's throughput against a bare transformers loop: warmed to convergence, interleaved.

Starts one real lem worker (through the coordinator's Supervisor, as `lem campaign` does)
and one bare-loop process (``bare_generate.py``) on the same GPU, both at the llama-3.2-1b
random-weight shape, bf16. For each batch size it alternates lem and bare windows until both
throughputs have converged (CV of the last ``--converge-runs`` windows below
``--converge-cv`` after at least ``--min-warmup-s``, bounded by ``--max-warmup-s``), then
takes ``--pairs`` interleaved pairs in ABBA order and reports medians and lem/bare.
Prints one JSON line per batch size; needs a CUDA GPU. lem's worker runs as `lem campaign`
runs it (telemetry sidecar included), except that each window is one pass (as the bare
loop's) and no idle baseline is taken; its figures are flagged ``contaminated`` because the
bare process holds the same GPU. With ``--zeus`` the bare loop's windows are also Zeus
``ZeusMonitor`` windows (issue 20's peer comparison: ``bare_zeus_j_per_tok_median``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lem.coordinator.execution.gpus import assign_gpus
from lem.coordinator.execution.hub import Hub
from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec, worker_environment
from lem.coordinator.execution.supervisor import Supervisor
from lem.protocol.config import ExperimentConfig, IdleBaselineConfig, ModelConfig
from lem.protocol.devices.nvml import inventory
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.messages import Run
from lem.protocol.results import Measurement

PROMPTS_PER_RUN = {1: 4, 8: 16, 32: 64}


@dataclass
class Side:
    name: str
    tok_per_s: list[float] = field(default_factory=list)
    j_per_tok: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    zeus_j_per_tok: list[float] = field(default_factory=list)
    zeus_time_s: list[float] = field(default_factory=list)


class Bare:
    def __init__(self, env: dict[str, str]) -> None:
        script = Path(__file__).with_name("bare_generate.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        print(f"bare loop ready: {ready}", file=sys.stderr, flush=True)

    def run(self, request: dict[str, object]) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, float] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--prompts-scale", type=int, default=1, help="multiply prompts per window")
    parser.add_argument("--min-warmup-s", type=float, default=20.0)
    parser.add_argument("--max-warmup-s", type=float, default=90.0)
    parser.add_argument("--converge-runs", type=int, default=4)
    parser.add_argument("--converge-cv", type=float, default=0.01)
    parser.add_argument(
        "--zeus", action="store_true", help="measure the bare loop's windows with ZeusMonitor"
    )
    args = parser.parse_args()

    inv = inventory()
    assignment = assign_gpus("cuda", 1, inv.gpus, None, inv.unavailable_reason)
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher(), handshake_timeout_s=300)
    tmp = Path(tempfile.mkdtemp(prefix="lem-vs-bare-"))
    spec = WorkerSpec(
        worker_id="lem",
        backend="pytorch",
        endpoint=hub.endpoint,
        assignment=assignment,
        journal_path=tmp / "lem.jsonl",
        log_path=tmp / "lem.log",
        handshake_timeout_s=300,
    )
    worker = supervisor.start_worker(spec)
    bare = Bare(worker_environment(assignment))  # the same allow-listed env as lem's worker
    cycle = 0
    try:
        for batch_size in args.batch_sizes:
            num_prompts = PROMPTS_PER_RUN.get(batch_size, 2 * batch_size) * args.prompts_scale
            config = ExperimentConfig(
                device="cuda",
                batch_size=batch_size,
                num_prompts=num_prompts,
                input_tokens=args.input_tokens,
                output_tokens=args.output_tokens,
                warmup_batches=0,
                min_window_s=0.0,  # one pass per window, as the bare loop does
                idle_baseline=IdleBaselineConfig(enabled=False),
                model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16"),
                pytorch=PyTorchConfig(cache_implementation=args.cache),
            )
            request = {
                "batch_size": batch_size,
                "num_prompts": num_prompts,
                "input_tokens": args.input_tokens,
                "output_tokens": args.output_tokens,
                "cache": args.cache,
                "zeus": args.zeus,
            }

            def lem_once(side: Side, config: ExperimentConfig = config) -> None:
                nonlocal cycle
                cycle += 1
                outcome = supervisor.run(
                    worker, Run(experiment_id="bench", cycle=cycle, config=config)
                )
                if not isinstance(outcome, Measurement):
                    raise RuntimeError(f"lem run failed: {outcome}")
                side.tok_per_s.append(outcome.work.output_tokens_per_s)
                if outcome.energy.energy_j is not None:
                    side.j_per_tok.append(outcome.energy.energy_per_output_token_j or 0.0)
                    side.power_w.append(outcome.energy.avg_power_w or 0.0)

            def bare_once(side: Side, request: dict[str, object] = request) -> None:
                answer = bare.run(request)  # the hub's I/O thread keeps lem's worker beating
                side.tok_per_s.append(answer["output_tokens_per_s"])
                energy_j = answer["energy_j"]
                if answer.get("zeus_energy_j") is not None:  # Zeus's window, a little wider
                    side.zeus_j_per_tok.append(answer["zeus_energy_j"] / answer["output_tokens"])
                    side.zeus_time_s.append(answer["zeus_time_s"])
                side.j_per_tok.append(energy_j / answer["output_tokens"])
                side.power_w.append(energy_j / answer["duration_s"])

            result = compare(args, lem_once, bare_once)
            result.update(
                {
                    "batch_size": batch_size,
                    "num_prompts": num_prompts,
                    "cache": args.cache,
                    "gpu": inv.gpus[0].name if inv.gpus else None,
                    "gpu_uuid": inv.gpus[0].uuid if inv.gpus else None,
                }
            )
            print(json.dumps(result), flush=True)
    finally:
        bare.close()
        supervisor.stop_all("benchmark done")
        hub.close()


RunOnce = Callable[[Side], None]


def compare(args: argparse.Namespace, lem_once: RunOnce, bare_once: RunOnce) -> dict[str, object]:
    warm_lem, warm_bare = Side("lem"), Side("bare")
    started = time.monotonic()
    converged = False
    k = args.converge_runs
    while time.monotonic() - started < args.max_warmup_s:
        lem_once(warm_lem)
        bare_once(warm_bare)
        if (
            time.monotonic() - started >= args.min_warmup_s
            and len(warm_lem.tok_per_s) >= k
            and cv(warm_lem.tok_per_s[-k:]) < args.converge_cv
            and cv(warm_bare.tok_per_s[-k:]) < args.converge_cv
        ):
            converged = True
            break
    lem, bare = Side("lem"), Side("bare")
    for pair in range(args.pairs):
        order = (lem_once, bare_once) if pair % 2 == 0 else (bare_once, lem_once)
        for fn in order:
            fn(lem if fn is lem_once else bare)

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 4) if values else None

    lem_med, bare_med = statistics.median(lem.tok_per_s), statistics.median(bare.tok_per_s)
    return {
        "warmup_s": round(time.monotonic() - started, 1),
        "warmup_windows_each": len(warm_lem.tok_per_s),
        "warmup_converged": converged,
        "warmup_last_cv": [
            round(cv(warm_lem.tok_per_s[-k:]), 4),
            round(cv(warm_bare.tok_per_s[-k:]), 4),
        ],
        "lem_tok_per_s_median": round(lem_med, 1),
        "bare_tok_per_s_median": round(bare_med, 1),
        "lem_over_bare": round(lem_med / bare_med, 4),
        # each pair ran back to back, so its ratio cancels drift that is slow against a pair
        "lem_over_bare_paired_median": round(
            statistics.median(a / b for a, b in zip(lem.tok_per_s, bare.tok_per_s, strict=True)), 4
        ),
        "lem_tok_per_s_cv": round(cv(lem.tok_per_s), 4),
        "bare_tok_per_s_cv": round(cv(bare.tok_per_s), 4),
        "lem_j_per_tok_median": median(lem.j_per_tok),
        "bare_j_per_tok_median": median(bare.j_per_tok),
        "bare_zeus_j_per_tok_median": median(bare.zeus_j_per_tok),
        "bare_zeus_window_s_median": median(bare.zeus_time_s),
        "lem_j_per_tok": [round(v, 5) for v in lem.j_per_tok],
        "bare_zeus_j_per_tok": [round(v, 5) for v in bare.zeus_j_per_tok],
        "lem_power_w_median": median(lem.power_w),
        "bare_power_w_median": median(bare.power_w),
        "lem_tok_per_s": [round(v, 1) for v in lem.tok_per_s],
        "bare_tok_per_s": [round(v, 1) for v in bare.tok_per_s],
    }


if __name__ == "__main__":
    main()
