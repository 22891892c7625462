"""Install carried wheels that this interpreter lacks, into one target folder (a GPU machine
with no package index: ``.whl/`` travels with the call, see benchmarks/side_by_side.sh).

A wheel whose project is already installed is skipped, so a carried copy never shadows the
machine's torch, numpy, pandas or transformers; the others go in with ``--no-deps``.

    python3 benchmarks/device_wheels.py --target /tmp/site .whl/any .whl/cp312 .whl/peers
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path


def project(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed() -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--always", nargs="*", default=["lem"], help="install even if present")
    args = parser.parse_args()
    have = installed()
    wheels = sorted(w for folder in args.folders for w in folder.glob("*.whl"))
    wanted = [w for w in wheels if project(w) not in have or project(w) in args.always]
    skipped = sorted({project(w) for w in wheels} - {project(w) for w in wanted})
    print(f"device_wheels: installing {len(wanted)}, already here: {', '.join(skipped)}")
    if wanted:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(args.target)]
        if subprocess.run([*command, *map(str, wanted)]).returncode != 0:
            for wheel in wanted:  # one at a time: one bad wheel must not stop the rest
                if subprocess.run([*command, str(wheel)]).returncode != 0:
                    print(f"device_wheels: could not install {wheel.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
