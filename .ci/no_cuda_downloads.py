"""Exit 1 when a pip install log shows a CUDA wheel being fetched or installed.

CI runs it on the install logs of the CPU path (``make``'s .venv, ``lem env sync pytorch``
from a wheel): a CPU machine following the README must never download a CUDA build of torch,
NVIDIA's CUDA libraries (``nvidia-*``, not ``nvidia-ml-py``: NVML's bindings) or triton.
Usage: ``python .ci/no_cuda_downloads.py LOG [LOG ...]``: each log must also show PyTorch's
CPU torch being installed (so an empty or unrelated log cannot pass).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

VERBS = re.compile(r"\b(Collecting|Downloading|Processing|Using cached|Obtaining)\s+(\S+)")
CUDA = re.compile(
    r"^(nvidia[-_](?!ml[-_]py)\S*|cuda[-_]\S*|triton\S*|pytorch[-_]triton\S*"
    r"|torch(==|-)(?![^\s]*\+cpu)\S*)$",
    re.IGNORECASE,
)


def cuda_lines(text: str) -> list[str]:
    """The log lines that fetch or install a CUDA distribution."""
    found = []
    for line in text.splitlines():
        for match in VERBS.finditer(line):
            token = match.group(2).rsplit("/", 1)[-1].split("#", 1)[0]
            if CUDA.match(token.replace("%2B", "+")):
                found.append(line.strip())
    return found


CPU_TORCH = re.compile(r"torch-[0-9.]+\+cpu-\S+\.whl|torch==[0-9.]+\+cpu")


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    texts = {path: Path(path).read_text() for path in paths}
    bad = [f"{path}: {line}" for path, text in texts.items() for line in cuda_lines(text)]
    bad += [
        f"{path}: no CPU torch installed" for path, t in texts.items() if not CPU_TORCH.search(t)
    ]
    for line in bad:
        print(f"CUDA download on the CPU path: {line}")
    if not bad:
        print(f"no CUDA wheel in {len(paths)} install log(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
