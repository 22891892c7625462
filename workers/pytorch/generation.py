"""The exact ``model.generate`` call lem measures, usable outside lem by a benchmark script.

``build_generation_config`` + ``generate_kwargs`` give the call; ``count_new_tokens``
counts the generated tokens of its result. Ignoring EOS: transformers 5 fills every
``None`` field of a passed ``GenerationConfig`` from ``model.generation_config``, so
``eos_token_id=None`` does NOT disable EOS; an empty list (``eos_token_id=[]``) does, and
then every row gets exactly ``max_new_tokens`` new tokens with no extra logits processor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from lem.protocol.config import ExperimentConfig

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from lem.workers.pytorch.prompts import PreparedBatch


def build_generation_config(
    config: ExperimentConfig, pad_token_id: int, eos_token_ids: list[int]
) -> GenerationConfig:
    """The GenerationConfig of ``config``: ``output_tokens`` new tokens at most (exactly,
    when ``ignore_eos``), greedy when ``greedy``, a static KV cache when asked."""
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": config.output_tokens,
        "do_sample": not config.greedy,
        "pad_token_id": pad_token_id,
        "use_cache": True,
        "return_dict_in_generate": False,
    }
    if config.ignore_eos:
        kwargs["eos_token_id"] = []
    elif eos_token_ids:
        kwargs["eos_token_id"] = list(eos_token_ids)
    if config.pytorch.cache_implementation == "static":
        kwargs["cache_implementation"] = "static"
    return GenerationConfig(**kwargs)


def generate_kwargs(batch: PreparedBatch, generation_config: GenerationConfig) -> dict[str, Any]:
    """Keyword arguments of ``model.generate`` for ``batch``."""
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "generation_config": generation_config,
    }


def generate_batch(
    model: PreTrainedModel, batch: PreparedBatch, generation_config: GenerationConfig
) -> torch.Tensor:
    """Run the measured call on one batch; returns the sequences (input then new tokens).

    The caller holds ``torch.inference_mode()``.
    """
    # cast: mypy resolves nn.Module attributes to Tensor | Module.
    result: Any = cast(Any, model).generate(**generate_kwargs(batch, generation_config))
    return result if not hasattr(result, "sequences") else result.sequences


def count_new_tokens(
    sequences: torch.Tensor, input_width_tokens: int, eos_token_ids: list[int], ignore_eos: bool
) -> int:
    """Generated tokens in ``sequences``: every new column per row when ``ignore_eos``,
    else each row's new tokens up to and including its first EOS."""
    new_tokens = sequences[:, input_width_tokens:].tolist()
    if ignore_eos or not eos_token_ids:
        return sum(len(row) for row in new_tokens)
    eos = set(eos_token_ids)
    total = 0
    for row in new_tokens:
        count = len(row)
        for position, token in enumerate(row):
            if token in eos:
                count = position + 1
                break
        total += count
    return total
