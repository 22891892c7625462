"""Save a model shape with lem's seeded random weights (and its tokenizer) to a folder, once,
for optimum-benchmark in the side-by-side to load (``benchmarks/side_by_side.sh``; lem and
the bare loop build random weights of the same shape in memory: values do not change speed
or energy, since every run generates exactly its asked tokens).

    python benchmarks/peer_model.py --shape llama-3.2-1b --dtype bfloat16 DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from server_vs_inprocess import save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    save_model(args.shape, args.dtype, args.folder)
    print(args.folder)


if __name__ == "__main__":
    main()
