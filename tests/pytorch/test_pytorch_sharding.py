"""One model copy over several GPUs: the balanced plan for a random-weight model, computed
on CPU for a real (tiny) transformers model with GPU memory limits given in bytes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.shapes import build_shape_config
from lem.workers.engines.pytorch.sharding import balanced_device_map, gpus_used


def model_and_bytes(name: str = "llama-3.2-1b") -> tuple[Any, int]:
    """The real shape on the meta device (no memory is allocated) and its size in bytes."""
    config = build_shape_config(name, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    size_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, size_bytes


def test_a_model_too_big_for_one_gpu_is_split_over_two_without_splitting_a_layer() -> None:
    model, size_bytes = model_and_bytes()
    each = int(size_bytes * 0.7)  # neither GPU alone can hold it
    device_map = balanced_device_map(model, {0: each, 1: each}, dtype=torch.bfloat16)
    assert set(device_map.values()) == {0, 1}
    layers = {k: v for k, v in device_map.items() if ".layers." in k}
    assert len(layers) == 16  # whole decoder layers, never their parts
    assert all(k.count(".") == 2 for k in layers)
    on_0 = [int(k.rsplit(".", 1)[1]) for k, v in layers.items() if v == 0]
    assert on_0 == list(range(len(on_0))) and 3 <= len(on_0) <= 13  # in order, both used


def test_a_model_that_does_not_fit_all_gpus_is_refused_not_offloaded() -> None:
    model, size_bytes = model_and_bytes()
    with pytest.raises(BackendError, match="does not fit 2 GPU"):
        balanced_device_map(model, {0: size_bytes // 4, 1: size_bytes // 4})


def test_gpus_used_reads_the_device_map_or_the_parameters() -> None:
    model, _ = model_and_bytes()
    model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 1, "lm_head": 1}
    assert gpus_used(model) == [0, 1]
    plain = torch.nn.Linear(2, 2)
    assert gpus_used(plain) == []  # type: ignore[arg-type]
