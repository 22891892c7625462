"""Fixtures of the PyTorch backend tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lem.workers.engines.pytorch.engine import PyTorchBackend


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow the
    tiny models' matrix products a hundredfold when other processes compete for the cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def backend() -> Iterator[PyTorchBackend]:
    """A fresh, initialised CPU backend, closed after the test."""
    created = PyTorchBackend()
    created.initialise([])
    yield created
    created.close()
