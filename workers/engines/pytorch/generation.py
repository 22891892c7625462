"""The exact ``model.generate`` call lem measures, usable outside lem by a benchmark script.

``build_generation_config`` + ``generate_kwargs`` give the call; ``count_new_tokens``
counts the generated tokens of its result. Ignoring EOS: transformers 5 fills every
``None`` field of a passed ``GenerationConfig`` from ``model.generation_config``, so
``eos_token_id=None`` does NOT disable EOS; an empty list (``eos_token_id=[]``) does, and
then every row gets exactly ``max_new_tokens`` new tokens with no extra logits processor.

Per-row output lengths: when a batch's rows have different targets (or targets below
``max_new_tokens``), the batch carries a stopping criterion (``stopping.RowTargets``) that
marks each row done at its own target; transformers then pads finished rows and ends the
call when every row is done. Batches whose rows all target ``max_new_tokens`` get no
criterion: the fixed-length call is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from lem.protocol.config import ExperimentConfig

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

    from lem.workers.engines.pytorch.prompts import PreparedBatch


def build_generation_config(
    config: ExperimentConfig,
    pad_token_id: int,
    eos_token_ids: list[int],
    max_new_tokens: int | None = None,
) -> GenerationConfig:
    """The GenerationConfig of ``config``: ``max_new_tokens`` (default ``output_tokens``)
    new tokens at most (exactly, when ``ignore_eos`` and no row has a smaller target),
    greedy when ``greedy``, a static KV cache when asked, and ``pytorch.compile``: false sets
    ``disable_compile``, true an explicit ``CompileConfig`` (None leaves transformers'
    choice: compiled on CUDA with the static cache)."""
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": config.output_tokens if max_new_tokens is None else max_new_tokens,
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
    if config.pytorch.compile is False:
        kwargs["disable_compile"] = True
    elif config.pytorch.compile:
        from transformers import CompileConfig

        kwargs["compile_config"] = CompileConfig(mode="reduce-overhead")
    return GenerationConfig(**kwargs)


def generate_kwargs(
    batch: PreparedBatch, generation_config: GenerationConfig, streamer: Any = None
) -> dict[str, Any]:
    """Keyword arguments of ``model.generate`` for ``batch`` (with ``streamer`` when given:
    a transformers ``BaseStreamer``, e.g. ``token_clock.StepClock``)."""
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "generation_config": generation_config,
    }
    if batch.stopping_criteria is not None:
        kwargs["stopping_criteria"] = batch.stopping_criteria
    if streamer is not None:
        kwargs["streamer"] = streamer
    return kwargs


def generate_batch(
    model: PreTrainedModel,
    batch: PreparedBatch,
    generation_config: GenerationConfig,
    streamer: Any = None,
) -> torch.Tensor:
    """Run the measured call on one batch; returns the sequences (input then new tokens).

    The caller holds ``torch.inference_mode()``.
    """
    # cast: mypy resolves nn.Module attributes to Tensor | Module.
    kwargs = generate_kwargs(batch, generation_config, streamer)
    result: Any = cast(Any, model).generate(**kwargs)
    return result if not hasattr(result, "sequences") else result.sequences


def count_new_tokens(
    sequences: torch.Tensor,
    input_width_tokens: int,
    eos_token_ids: list[int],
    ignore_eos: bool,
    output_tokens_per_row: tuple[int, ...] = (),
) -> int:
    """Generated tokens in ``sequences``: every new column per row when ``ignore_eos``,
    else each row's new tokens up to and including its first EOS. With
    ``output_tokens_per_row``, row i counts at most its target (the pads after it never)."""
    return sum(
        new_tokens_per_row(
            sequences, input_width_tokens, eos_token_ids, ignore_eos, output_tokens_per_row
        )
    )


def new_tokens_per_row(
    sequences: torch.Tensor,
    input_width_tokens: int,
    eos_token_ids: list[int],
    ignore_eos: bool,
    output_tokens_per_row: tuple[int, ...] = (),
) -> list[int]:
    """Each row's generated tokens, counted as ``count_new_tokens`` counts them."""
    new_tokens = sequences[:, input_width_tokens:].tolist()
    if output_tokens_per_row:
        if len(output_tokens_per_row) != len(new_tokens):
            raise ValueError(f"{len(output_tokens_per_row)} targets for {len(new_tokens)} rows")
        new_tokens = [
            row[:target] for row, target in zip(new_tokens, output_tokens_per_row, strict=True)
        ]
    if ignore_eos or not eos_token_ids:
        return [len(row) for row in new_tokens]
    eos = set(eos_token_ids)
    counts = []
    for row in new_tokens:
        count = len(row)
        for position, token in enumerate(row):
            if token in eos:
                count = position + 1
                break
        counts.append(count)
    return counts
