"""Named real architecture shapes, as transformers configs built without any download.

A shape fixes the architecture (layer count, widths, heads, vocabulary, RoPE) of a real
model so that ``source: random`` can measure it with random weights. ``lem-tiny`` is lem's
own built-in shape: small enough that a CPU campaign of a few experiments takes seconds.

This module does not import torch; transformers' config classes are imported inside
``build_shape_config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lem.workers.engines.base import BackendError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

BUILTIN_SHAPE = "lem-tiny"


@dataclass(frozen=True)
class ShapeSpec:
    """One architecture: its transformers family and the config fields that fix its shape.

    ``approx_params`` is the published parameter count (a count, not millions), used by
    tests and listings; the built model's count is the truth.
    """

    family: Literal["llama", "qwen2"]
    fields: dict[str, Any] = field(default_factory=dict)
    approx_params: float = 0.0


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


_SHAPES: dict[str, ShapeSpec] = {
    BUILTIN_SHAPE: ShapeSpec(
        "llama",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 512,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        approx_params=0.13e6,
    ),
    "llama-3.2-1b": ShapeSpec(
        "llama",
        {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
            "rope_parameters": _llama3_rope(32.0),
        },
        approx_params=1.24e9,
    ),
    "llama-3.1-8b": ShapeSpec(
        "llama",
        {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "rope_parameters": _llama3_rope(8.0),
        },
        approx_params=8.03e9,
    ),
    "qwen2.5-0.5b": ShapeSpec(
        "qwen2",
        {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        approx_params=0.494e9,
    ),
    "tinyllama-1.1b": ShapeSpec(
        "llama",
        {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "vocab_size": 32000,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        approx_params=1.10e9,
    ),
}


def known_shapes() -> list[str]:
    """Names of every shape ``build_shape_config`` knows, sorted."""
    return sorted(_SHAPES)


def shape_spec(name: str) -> ShapeSpec:
    """The spec of shape ``name``; an unknown name is a ``BackendError`` listing the known."""
    try:
        return _SHAPES[name]
    except KeyError:
        raise BackendError(
            f"unknown model shape {name!r}; known shapes: {', '.join(known_shapes())}"
        ) from None


def build_shape_config(
    name: str,
    *,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> PretrainedConfig:
    """A transformers config of shape ``name`` (no download).

    The special token ids are those of the tokenizer the model will run with (lem's byte
    tokenizer for random weights), so that EOS handling matches the prompts.
    """
    spec = shape_spec(name)
    kwargs: dict[str, Any] = dict(spec.fields)
    kwargs.update(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if spec.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**kwargs)
    from transformers import Qwen2Config

    return Qwen2Config(**kwargs)
