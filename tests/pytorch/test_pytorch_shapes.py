"""Named architecture shapes build configs of the right size, with no download."""

from __future__ import annotations

import pytest

from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.shapes import build_shape_config, known_shapes

# Published parameter counts (embeddings counted once when tied).
EXPECTED_PARAMS = {
    "llama-3.2-1b": 1.24e9,
    "llama-3.1-8b": 8.03e9,
    "qwen2.5-0.5b": 0.49e9,
    "tinyllama-1.1b": 1.10e9,
}


def test_known_shapes_lists_every_shape() -> None:
    assert set(EXPECTED_PARAMS) | {"lem-tiny"} <= set(known_shapes())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_shape_parameter_count(name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    config = build_shape_config(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(EXPECTED_PARAMS[name], rel=0.02)


def test_shape_fields() -> None:
    llama = build_shape_config("llama-3.2-1b", pad_token_id=0, bos_token_id=1, eos_token_id=2)
    assert llama.model_type == "llama"
    assert (llama.hidden_size, llama.num_key_value_heads, llama.vocab_size) == (2048, 8, 128256)
    assert llama.rope_parameters["rope_theta"] == 500000.0
    assert llama.tie_word_embeddings is True
    assert (llama.eos_token_id, llama.pad_token_id) == (2, 0)
    qwen = build_shape_config("qwen2.5-0.5b")
    assert qwen.model_type == "qwen2"
    assert qwen.rope_parameters["rope_theta"] == 1e6
    assert qwen.max_position_embeddings == 32768
    tiny = build_shape_config("lem-tiny")
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.vocab_size) == (64, 2, 512)


def test_unknown_shape_lists_known_names() -> None:
    with pytest.raises(BackendError) as failure:
        build_shape_config("gpt-17")
    for name in known_shapes():
        assert name in str(failure.value)
