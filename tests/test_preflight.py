"""Every worker's fail-fast checks before its backend loads (workers/runtime/preflight.py): CUDA
initialised too early, or GPUs visible that differ from those given."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from lem.workers.engines.base import CudaVisibilityError
from lem.workers.runtime.preflight import check_cuda_not_initialised, check_gpu_assignment

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"


def fake_torch(initialised: bool) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_initialized=lambda: initialised)  # type: ignore[attr-defined]
    return torch


def test_cuda_initialised_before_the_worker_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True))
    with pytest.raises(CudaVisibilityError, match="CUDA was initialised before"):
        check_cuda_not_initialised()


def test_untouched_or_absent_cuda_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False))
    check_cuda_not_initialised()
    monkeypatch.delitem(sys.modules, "torch")
    check_cuda_not_initialised()
    assert "torch" not in sys.modules  # the check imports nothing


def test_the_assignment_must_match_cuda_visible_devices_and_nvml() -> None:
    check_gpu_assignment([GPU_A, GPU_B], f"{GPU_A},{GPU_B}", {GPU_A, GPU_B})
    check_gpu_assignment([], "", None)  # CPU only
    check_gpu_assignment([GPU_A], GPU_A, None)  # NVML unavailable: not checked
    with pytest.raises(CudaVisibilityError, match="CUDA_VISIBLE_DEVICES is unset"):
        check_gpu_assignment([GPU_A], None, {GPU_A})
    with pytest.raises(CudaVisibilityError, match="CUDA_VISIBLE_DEVICES='0,1'"):
        check_gpu_assignment([GPU_A, GPU_B], "0,1", {GPU_A, GPU_B})
    with pytest.raises(CudaVisibilityError, match="but the worker was given"):
        check_gpu_assignment([GPU_A, GPU_B], f"{GPU_B},{GPU_A}", {GPU_A, GPU_B})  # order
    with pytest.raises(CudaVisibilityError, match="no GPU"):
        check_gpu_assignment([], GPU_A, {GPU_A})
    with pytest.raises(CudaVisibilityError, match=f"{GPU_B}, which NVML does not see"):
        check_gpu_assignment([GPU_B], GPU_B, {GPU_A})


def test_a_worker_given_a_gpu_nvml_cannot_see_fails_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lem.coordinator.execution.gpus import GpuAssignment
    from lem.coordinator.execution.hub import Hub
    from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec
    from lem.coordinator.execution.supervisor import Supervisor, WorkerStartError

    trace = Path(__file__).parent / "data" / "h100_idle.jsonl"
    monkeypatch.setenv("LEM_NVML_REPLAY", str(trace))  # NVML sees one replayed H100
    monkeypatch.setenv("LEM_WORKER_BACKEND", "lem.workers.engines.sleep:SleepBackend")
    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher())
    spec = WorkerSpec(
        worker_id="w-ghost",
        backend="pytorch",
        endpoint=hub.endpoint,
        assignment=GpuAssignment(("GPU-00000000-0000-0000-0000-00000000dead",)),
        journal_path=tmp_path / "j.jsonl",
        log_path=tmp_path / "w.log",
    )
    try:
        with pytest.raises(WorkerStartError) as caught:
            supervisor.start_worker(spec)
    finally:
        hub.close()
    message = str(caught.value)
    assert "CudaVisibilityError" in message and "NVML does not see" in message
    assert "00000000dead" in message
