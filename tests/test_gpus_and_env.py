"""The one GPU assignment function and the allow-listed worker environment."""

from __future__ import annotations

import pytest

from lem.coordinator.execution.gpus import CPU_ONLY, GpuAssignment, GpuAssignmentError, assign_gpus
from lem.coordinator.execution.launcher import describe_exit, worker_environment
from lem.protocol.results import GpuInfo


def _gpus(n: int) -> list[GpuInfo]:
    return [GpuInfo(index=i, uuid=f"GPU-{i:04d}", name="H100") for i in reversed(range(n))]


def test_cpu_device_gets_no_gpu() -> None:
    assert assign_gpus("cpu", 1, _gpus(2)) == CPU_ONLY
    assert CPU_ONLY.cuda_visible_devices == ""


def test_auto_without_gpus_runs_on_cpu_but_cuda_insists() -> None:
    assert assign_gpus("auto", 1, []) == CPU_ONLY
    with pytest.raises(GpuAssignmentError, match="NVML could not start"):
        assign_gpus("cuda", 1, [], nvml_unavailable_reason="NVML could not start")


def test_lowest_indices_first_by_uuid() -> None:
    assignment = assign_gpus("auto", 2, _gpus(4))
    assert assignment == GpuAssignment(("GPU-0000", "GPU-0001"))
    assert assignment.cuda_visible_devices == "GPU-0000,GPU-0001"


def test_allowed_indices_limit_the_choice() -> None:
    assert assign_gpus("cuda", 1, _gpus(4), allowed_indices={2, 3}).gpu_uuids == ("GPU-0002",)
    with pytest.raises(GpuAssignmentError, match="2 usable"):
        assign_gpus("cuda", 3, _gpus(4), allowed_indices={2, 3})


def test_worker_environment_is_allow_listed() -> None:
    base = {
        "PATH": "/bin",
        "HF_TOKEN": "secret",
        "AWS_SECRET_ACCESS_KEY": "x",
        "NCCL_DEBUG": "INFO",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "LC_CTYPE": "C.UTF-8",
    }
    env = worker_environment(GpuAssignment(("GPU-a",)), base)
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["NCCL_DEBUG"] == "INFO" and env["LC_CTYPE"] == "C.UTF-8"
    assert "HF_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(None) == "still running"
