"""PyTorchBackend on an NVIDIA GPU: visibility check, memory readings, bf16, static cache and
quick random-weight builds of real shapes. Skipped with a reason where CUDA or NVML is absent.
Run this file in its own pytest process: ``initialise`` must come before CUDA is initialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import ModelConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.workers.engines.base import CudaVisibilityError
from lem.workers.engines.pytorch.engine import PyTorchBackend


def _nvml_uuids() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    uuids = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
        uuids.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
    return uuids


def _torch_has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


NVML_UUIDS = _nvml_uuids()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not NVML_UUIDS, reason="no NVIDIA GPU seen through NVML"),
    pytest.mark.skipif(not _torch_has_cuda(), reason="this torch has no CUDA"),
]


@pytest.fixture(scope="module")
def gpu_backend() -> Iterator[PyTorchBackend]:
    """One backend for the module: CUDA can be checked only before it is initialised."""
    created = PyTorchBackend()
    report = created.initialise(NVML_UUIDS)
    assert report.device == "cuda"
    assert [u.lower() for u in report.gpu_uuids] == [u.lower() for u in NVML_UUIDS]
    assert report.cuda_version
    yield created
    created.close()


def test_tiny_run_on_gpu_reports_memory_and_exact_counts(gpu_backend: PyTorchBackend) -> None:
    stats = run_config(gpu_backend, tiny_config(device="auto"))
    assert stats.device == "cuda"
    assert stats.output_tokens == 5 * 6
    assert stats.input_tokens == 5 * 12
    assert stats.peak_gpu_memory_load_mib is not None and stats.peak_gpu_memory_load_mib > 0
    assert stats.peak_gpu_memory_inference_mib is not None
    assert stats.peak_gpu_memory_inference_mib >= stats.peak_gpu_memory_load_mib * 0.99
    assert stats.gpu_memory_unavailable_reason is None
    assert gpu_backend._loaded is not None
    assert gpu_backend._loaded.dtype_name == "bfloat16"
    cpu = run_config(gpu_backend, tiny_config(device="cpu"))
    assert cpu.device == "cpu" and cpu.model_reused is False


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_llama_1b_shape_on_gpu(
    gpu_backend: PyTorchBackend, cache: Literal["dynamic", "static"]
) -> None:
    config = tiny_config(
        device="auto",
        model=ModelConfig(source="random", name="llama-3.2-1b"),
        pytorch=PyTorchConfig(cache_implementation=cache),
        batch_size=4,
        num_prompts=8,
        input_tokens=64,
        output_tokens=32,
        warmup_batches=2,
    )
    stats = run_config(gpu_backend, config)
    print(f"llama-3.2-1b {cache}: {stats}")
    assert stats.output_tokens == 8 * 32
    assert stats.input_tokens == 8 * 64
    # bf16 weights: 1.236e9 params * 2 bytes = 2357 MiB; the load peak also holds
    # weight-initialisation temporaries (seen: 2892 MiB on an H100).
    assert stats.peak_gpu_memory_load_mib is not None
    assert 2357 * 0.99 < stats.peak_gpu_memory_load_mib < 2357 * 1.5


def test_llama_8b_shape_initialises_quickly(gpu_backend: PyTorchBackend) -> None:
    config = tiny_config(
        device="auto",
        model=ModelConfig(source="random", name="llama-3.1-8b"),
        num_prompts=2,
        input_tokens=16,
        output_tokens=8,
    )
    stats = run_config(gpu_backend, config)
    print(f"llama-3.1-8b: {stats}")
    assert stats.output_tokens == 2 * 8
    assert stats.model_load_s < 60
    assert stats.peak_gpu_memory_load_mib is not None
    assert 8.03e9 * 2 / 2**20 * 0.99 < stats.peak_gpu_memory_load_mib < 8.03e9 * 2 / 2**20 * 1.5


def test_other_gpu_uuid_is_refused() -> None:
    with pytest.raises(CudaVisibilityError):
        PyTorchBackend().initialise(["GPU-00000000-0000-0000-0000-000000000000"])
