"""An inference server against lem's in-process engine, at the same load, in one run.

The llama-3.2-1b shape with random weights (bf16; nothing downloaded) is saved to a folder;
``transformers serve`` serves it (lem's ``openai`` engine starts the server on lem's GPU and
drives it over /v1/completions, streaming), and lem's in-process PyTorch engine runs the same
model shape in server mode. Both get the same synthetic prompts (``--input-tokens``), the same
output length asked (``--output-tokens``; ``transformers serve`` does not enforce it, which
lem flags ``output_length_not_enforced`` and then counts the tokens the server reports) and
the same Poisson arrivals at each of ``--rates`` requests a second. One campaign, engines
interleaved per rate, so both are compared within one call on one card.

Prints one line per experiment (J/token gross and net, steady-state J/token, tok/s, TTFT and
ITL p50, flags) and leaves the store at ``--store`` (``lem results show`` / ``export``).

    python benchmarks/server_vs_inprocess.py --device cuda --rates 0.5 2 8 --num-requests 24
    python benchmarks/server_vs_inprocess.py --device cuda --sweep 3 --num-requests 48
    python benchmarks/server_vs_inprocess.py --device cpu --shape lem-tiny   # a dry run on CPU

``--sweep N`` replaces the fixed rates with a load sweep per engine (``workload.sweep``): each
engine's maximum throughput first, then N rates from ``--light`` of it to all of it, stopping
at saturation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LEM = [sys.executable, "-m", "lem.coordinator"]


def save_model(shape: str, dtype: str, folder: Path) -> Path:
    """The shape with lem's seeded random weights and its tokenizer, saved (on the CPU)."""
    import msgspec

    from lem.protocol.config import ModelConfig
    from lem.protocol.engines.pytorch import PyTorchConfig
    from lem.workers.engines.pytorch.loader import load_model

    source = "builtin" if shape == "lem-tiny" else "random"
    config = msgspec.convert({"source": source, "name": shape, "dtype": dtype}, ModelConfig)
    loaded = load_model(config, PyTorchConfig(), "cpu")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def campaign(args: argparse.Namespace, model_dir: Path) -> dict[str, object]:
    """Both engines at each rate, the rate outermost (grid order), engines interleaved."""
    common = {
        "device": args.device,
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "num_prompts": args.num_requests,
        "batch_size": args.batch_size,
        "warmup_batches": 1,
        "min_window_s": args.min_window_s,
        "workload": {"mode": "server", "arrival": "poisson", "seed": 0,
                     "num_requests": args.num_requests},
    }  # fmt: skip
    if args.sweep:  # lem finds the rates: the maximum throughput first, then shares of it
        common["workload"]["sweep"] = {"rates": args.sweep, "light_fraction": args.light}
    server = [
        "transformers", "serve", str(model_dir), "--port", "{port}",
        *(["--continuous-batching"] if args.continuous_batching else []),
    ]  # fmt: skip
    return {
        "name": "server-vs-inprocess",
        "experiment": common,
        "experiments": [
            {
                "name": "in-process",
                "backend": "pytorch",
                "model": {"source": "hf", "path": str(model_dir), "dtype": args.dtype},
            },
            {
                "name": "transformers-serve",
                "backend": "openai",
                "model": {"source": "hf", "path": str(model_dir), "dtype": args.dtype},
                "openai": {"command": server, "api": "completions", "ready_timeout_s": 300},
            },
        ],
        **({} if args.sweep else {"grid": {"workload.rate_per_s": list(args.rates)}}),
        "order": "interleaved",
        "cycles": args.cycles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument(
        "--sweep", type=int, default=0,
        help="N: a load sweep of N rates per engine (workload.sweep) instead of --rates",
    )  # fmt: skip
    parser.add_argument("--light", type=float, default=0.1, help="the sweep's lowest share")
    parser.add_argument("--num-requests", type=int, default=24)
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="in-process batch limit")
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument(
        "--min-window-s", type=float, default=20.0, help="20 s: a 1%% counter bound on an H100"
    )
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--store", type=Path, default=Path("server-vs-inprocess.db"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lem-server-vs-"))
    try:
        model_dir = save_model(args.shape, args.dtype, folder / "model")
        spec = folder / "campaign.json"  # JSON is YAML
        spec.write_text(json.dumps(campaign(args, model_dir), indent=1))
        done = subprocess.run([*LEM, "campaign", str(spec), "--store", str(args.store)])
        subprocess.run([*LEM, "results", "list", "--store", str(args.store)])
        print_rows(args.store)
        sys.exit(done.returncode)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_rows(store: Path) -> None:
    out = subprocess.run(
        [*LEM, "results", "export", "--store", str(store), "--format", "json", "-o", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        print(out.stderr)
        return
    keys = ("experiment_name", "config.workload.rate_per_s", "config.workload.concurrency",
            "cycle", "status",
            "energy_per_output_token_j", "net_energy_per_output_token_j",
            "steady_energy_per_output_token_j", "output_tokens", "output_tokens_per_s",
            "ttft_p50_ms", "itl_p50_ms", "gpu_uuids", "flags", "failure_reason")  # fmt: skip
    for row in json.loads(out.stdout):
        print(json.dumps({k: row.get(k) for k in keys}))


if __name__ == "__main__":
    main()
