"""CI's check that the CPU path downloads no CUDA wheel (``.ci/no_cuda_downloads.py``), on
pip logs of both kinds: a CPU install passes, any CUDA distribution fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "no_cuda_downloads.py"
CPU_LOG = """\
2026-12-05T07:02:48,698 Collecting accelerate==1.16.0 (from -r envs/pytorch-cpu/requirements.txt (line 4))
2026-12-05T07:03:12,000 Collecting nvidia-ml-py==13.615.71 (from -r envs/pytorch-cpu/requirements.txt (line 90))
2026-12-05T07:03:50,127 Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (from -r envs/pytorch-cpu/requirements.txt (line 150))
"""  # noqa: E501


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    log = tmp_path / "pip.log"
    log.write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(log)], capture_output=True, text=True, check=False
    )


def test_a_cpu_install_passes(tmp_path: Path) -> None:
    done = check(tmp_path, CPU_LOG)
    assert done.returncode == 0 and done.stdout == "no CUDA wheel in 1 install log(s)\n"


def test_any_cuda_distribution_fails(tmp_path: Path) -> None:
    for line in (
        "Collecting torch==2.13.0 (from -r r.txt (line 3))",
        "Downloading https://files.pythonhosted.org/packages/01/79/torch-2.13.0-cp311-cp311-"
        "manylinux_2_28_x86_64.whl (526.6 MB)",
        "Using cached nvidia_cublas-13.1.1.3-py3-none-manylinux_2_27_x86_64.whl (400 MB)",
        "Collecting triton==3.7.1 (from torch==2.13.0)",
        "Collecting cuda-toolkit==13.0.3.0",
    ):
        done = check(tmp_path, CPU_LOG + f"2026-12-05T07:04:00,000 {line}\n")
        assert done.returncode == 1, line
        assert done.stdout.startswith("CUDA download on the CPU path: "), done.stdout


def test_a_log_without_the_cpu_torch_fails(tmp_path: Path) -> None:
    done = check(tmp_path, "nothing was installed\n")
    assert done.returncode == 1 and "no CPU torch installed" in done.stdout
