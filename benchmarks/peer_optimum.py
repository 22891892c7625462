"""optimum-benchmark 0.6's inference scenario on a saved model folder: one JSON line per batch.

A peer of lem for issue 20's side-by-side (``benchmarks/side_by_side.sh``): the same model
folder (``benchmarks/peer_model.py``), batch size, 128 input and 128 output tokens, bf16 and
static KV cache as lem's and the Zeus bare loop's runs. optimum-benchmark runs in this
process (its inline launcher) with its latency and energy trackers; its energy tracker is
CodeCarbon in machine mode, sampling every second. Printed per batch size, with what the
report says and what it implies:

- ``generate_*``: one ``generate`` call (prefill + decode of the whole batch). Energy is
  CodeCarbon's over a loop of calls lasting at least ``--duration-s``, divided by the number
  of calls; the ``gpu`` part is the NVML energy-counter difference, ``cpu`` and ``ram``
  CodeCarbon's estimates (a TDP model and a per-GB constant where RAPL is absent).
- ``j_per_token_total`` / ``j_per_token_gpu``: generate energy / (batch × new tokens), the
  figure comparable to lem's gross J/token (GPU) and to what optimum-benchmark's own
  ``decode`` efficiency leaves out (it subtracts a separate prefill loop's energy).

    python benchmarks/peer_optimum.py --model DIR --batch-sizes 1 8 32 --device cuda
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

KWH_J = 3.6e6


def energy_j(part: Any) -> dict[str, float] | None:
    if part is None:
        return None
    return {k: getattr(part, k) * KWH_J for k in ("cpu", "gpu", "ram", "total")}


def transformers_5_shim() -> str | None:
    """optimum-benchmark 0.6.0 (the newest) imports ``transformers.SpecialTokensMixin``, which
    transformers 5 folded into ``PreTrainedTokenizerBase``; it uses the name only in a type
    alias. Supply it, so optimum-benchmark runs on the same transformers as lem; say so."""
    from transformers import Trainer  # noqa: F401  (its import replaces sys.modules' entry)

    transformers: Any = sys.modules["transformers"]
    if hasattr(transformers, "SpecialTokensMixin"):
        return None
    transformers.SpecialTokensMixin = transformers.PreTrainedTokenizerBase
    return f"transformers {transformers.__version__}: SpecialTokensMixin supplied"


def datasets_stub(force: bool = False) -> str | None:
    """optimum-benchmark imports ``datasets`` (and with it pyarrow, 54 MB) at its top, but its
    inference scenario never uses it. Where it is not installed (a GPU machine reached only by
    carrying wheels, 64 MiB a call), supply the three names it imports; say so."""
    if not force:
        try:
            import datasets  # noqa: F401

            return None
        except ImportError:
            pass
    package = types.ModuleType("datasets")
    utils = types.ModuleType("datasets.utils")
    logging_ = types.ModuleType("datasets.utils.logging")
    for module in (package, utils, logging_):  # find_spec (transformers asks) needs a spec
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    logging_.set_verbosity_error = lambda: None  # type: ignore[attr-defined]

    class Dataset:  # a type in optimum-benchmark's training paths only
        pass

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("datasets is not installed here (peer_optimum's stand-in)")

    package.Dataset, package.load_dataset = Dataset, load_dataset  # type: ignore[attr-defined]
    package.utils, utils.logging = utils, logging_  # type: ignore[attr-defined]
    sys.modules.update({"datasets": package, "datasets.utils": utils})
    sys.modules["datasets.utils.logging"] = logging_
    return "datasets not installed: a stand-in gives the names optimum-benchmark imports"


def run_one(args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    from optimum_benchmark import (
        Benchmark,
        BenchmarkConfig,
        InferenceConfig,
        InlineConfig,
        PyTorchConfig,
    )

    backend = PyTorchConfig(
        model=str(args.model),
        device=args.device,
        device_ids="0" if args.device == "cuda" else None,
        torch_dtype=args.dtype,
        cache_implementation=None if args.cache == "dynamic" else args.cache,
        no_weights=False,  # the folder holds lem's seeded random weights: nothing to download
        task="text-generation",
    )
    scenario = InferenceConfig(
        latency=True,
        energy=True,
        memory=False,
        duration=args.duration_s,
        iterations=args.iterations,
        warmup_runs=args.warmup_runs,
        input_shapes={"batch_size": batch_size, "sequence_length": args.input_tokens},
        generate_kwargs={
            "max_new_tokens": args.output_tokens,
            "min_new_tokens": args.output_tokens,
        },
    )
    config = BenchmarkConfig(
        name=f"peer-bs{batch_size}", launcher=InlineConfig(), scenario=scenario, backend=backend
    )
    start_s = time.perf_counter()
    report = Benchmark.launch(config)
    wall_s = time.perf_counter() - start_s
    tokens = batch_size * args.output_tokens
    generate = energy_j(report.generate.energy)
    emissions = Path("generate_codecarbon.json")  # the generate energy loop's CodeCarbon task
    codecarbon = json.loads(emissions.read_text()) if emissions.exists() else {}
    latency = report.generate.latency
    generate_s = float(latency.mean) if latency is not None else None
    return {
        "tool": "optimum-benchmark",
        "batch_size": batch_size,
        "new_tokens_per_generate": tokens,
        "generate_mean_s": generate_s,
        "generate_tok_per_s": tokens / generate_s if generate_s else None,
        "decode_tok_per_s": getattr(report.decode.throughput, "value", None),
        "generate_energy_j": generate,
        "prefill_energy_j": energy_j(report.prefill.energy),
        "decode_energy_j": energy_j(report.decode.energy),
        "decode_tokens_per_kwh": getattr(report.decode.efficiency, "value", None),
        "j_per_token_total": generate["total"] / tokens if generate else None,
        "j_per_token_gpu": generate["gpu"] / tokens if generate else None,
        "energy_loop_s": codecarbon.get("duration"),
        "codecarbon_power_w": {k: codecarbon.get(f"{k}_power") for k in ("cpu", "gpu", "ram")},
        "codecarbon_cpu_model": codecarbon.get("cpu_model"),
        "wall_s": round(wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cache", default="static", choices=["static", "dynamic"])
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument("--stub-datasets", action="store_true", help="even where installed")
    args = parser.parse_args()
    for note in (transformers_5_shim(), datasets_stub(args.stub_datasets)):
        if note:
            print(f"peer_optimum: {note}", file=sys.stderr)
    os.environ.setdefault("COUNTRY_ISO_CODE", "USA")  # CodeCarbon offline: no geo lookup
    work = Path(tempfile.mkdtemp(prefix="peer-optimum-"))
    os.chdir(work)  # CodeCarbon and the scenario write their files into the working folder
    for batch_size in args.batch_sizes:
        try:
            line = run_one(args, batch_size)
        except Exception as exc:  # one batch size failing must not lose the others
            line = {"tool": "optimum-benchmark", "batch_size": batch_size, "error": repr(exc)}
        print(json.dumps(line), flush=True)
    print(f"optimum-benchmark files in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
