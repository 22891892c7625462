"""Prompt sets (token ids and per-prompt output lengths) and the padded batches fed to
``model.generate``.

``build_prompt_set`` reads the config's prompt source (synthetic, file, sharegpt, hf) into
plain Python lists (no torch needed); ``make_batches`` turns them into left-padded
``input_ids``/``attention_mask`` tensors on the target device (torch is imported there).
Token counts are counts of tokens, never bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.tokenizer import special_token_ids
from lem.workers.workload.datasets import output_lengths_from_reference
from lem.workers.workload.prompt_set import (
    PromptSet,
    clip_lengths,
    describe_length,
    ids_hash,
    length_rng,
    sample_lengths,
    text_hash,
)
from lem.workers.workload.prompt_sources import hf_texts, read_sharegpt

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedBatch:
    """One batch ready for ``model.generate``: tensors already on the device.

    ``input_width_tokens`` is the padded width (new tokens start at that column);
    ``real_input_tokens`` counts the non-pad input tokens of all rows.
    ``output_tokens_per_row`` is each row's target output length (tokens);
    ``stopping_criteria`` (a transformers ``StoppingCriteriaList``) stops each row at its
    target, and is None when every row's target is the generate call's ``max_new_tokens``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: int
    input_width_tokens: int
    real_input_tokens: int
    output_tokens_per_row: tuple[int, ...] = ()
    stopping_criteria: Any = None


def synthetic_prompt_ids(
    num_prompts: int,
    input_tokens: int | list[int],
    seed: int,
    vocab_size: int,
    excluded_ids: set[int],
) -> list[list[int]]:
    """``num_prompts`` prompts of seeded random ids: exactly ``input_tokens`` ids each, or
    exactly ``input_tokens[i]`` ids for prompt i when it is a list.

    Ids are drawn from ``[0, vocab_size)`` less ``excluded_ids`` (the special tokens).
    """
    lengths = [input_tokens] * num_prompts if isinstance(input_tokens, int) else input_tokens
    if len(lengths) != num_prompts:
        raise ValueError(f"{len(lengths)} input lengths for {num_prompts} prompts")
    allowed = [i for i in range(vocab_size) if i not in excluded_ids]
    if not allowed:
        raise BackendError(f"no token id below {vocab_size} is free of special tokens")
    rng = random.Random(seed)
    return [rng.choices(allowed, k=length) for length in lengths]


def read_prompt_file(path: str) -> list[str]:
    """The prompts of a ``.txt`` (one a non-empty line) or ``.jsonl`` (field ``prompt`` or
    ``text``) file. A missing file, an unknown suffix or a bad record is a BackendError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackendError(f"prompt file not found: {path}")
    lines = file.read_text(encoding="utf-8").splitlines()
    if file.suffix == ".txt":
        prompts = [line for line in lines if line.strip()]
    elif file.suffix == ".jsonl":
        prompts = []
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            prompts.append(_jsonl_prompt(line, line_number, path))
    else:
        raise BackendError(f"prompt file {path} must end in .txt or .jsonl")
    if not prompts:
        raise BackendError(f"prompt file {path} holds no prompt")
    return prompts


def _jsonl_prompt(line: str, line_number: int, path: str) -> str:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as error:
        raise BackendError(f"{path} line {line_number}: not JSON ({error})") from error
    if isinstance(record, dict):
        for key in ("prompt", "text"):
            if isinstance(record.get(key), str):
                return str(record[key])
    raise BackendError(f"{path} line {line_number}: record has no string 'prompt' or 'text'")


def file_prompt_ids(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, num_prompts: int, input_tokens: int
) -> list[list[int]]:
    """Tokenise ``texts``, cut each to at most ``input_tokens`` tokens (keeping the head),
    and cycle them to ``num_prompts`` prompts."""
    encoded = [list(tokenizer(text)["input_ids"])[:input_tokens] for text in texts]
    if any(not ids for ids in encoded):
        raise BackendError("a prompt tokenised to no token")
    return [encoded[i % len(encoded)] for i in range(num_prompts)]


def _cycled(texts: list[str], count: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(count)]


def _output_lengths(config: ExperimentConfig, count: int) -> list[int]:
    """Drawn output lengths (not ``reference``) of ``count`` prompts."""
    rng = length_rng(config.prompts.seed, "output")
    return sample_lengths(config.prompts.output_length, count, config.output_tokens, rng)


def _synthetic(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> PromptSet:
    prompts = config.prompts
    rng = length_rng(prompts.seed, "input")
    input_lengths = sample_lengths(
        prompts.input_length, config.num_prompts, config.input_tokens, rng
    )
    ids = synthetic_prompt_ids(
        config.num_prompts,
        input_lengths,
        prompts.seed,
        min(vocab_size, len(tokenizer)),
        special_token_ids(tokenizer),
    )
    description = (
        f"synthetic seed {prompts.seed}, input "
        f"{describe_length(prompts.input_length, config.input_tokens)}"
    )
    return PromptSet(ids, _output_lengths(config, config.num_prompts), ids_hash(ids), description)


def build_prompt_set(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> PromptSet:
    """The ``config.num_prompts`` prompts of ``config`` as token ids (below ``vocab_size``),
    with each prompt's output length, the set's hash and a description of its source.

    Text sources hash their texts (before tokenisation, cycled to ``num_prompts``);
    synthetic prompts hash their ids. Output lengths come from ``prompts.output_length``
    (absent: ``output_tokens`` each); ``reference`` lengths (sharegpt) are the token counts
    of the reference replies, without special tokens, clipped to [1, ``output_tokens``].
    """
    prompts = config.prompts
    if prompts.skip:
        return _skipped(config, tokenizer, vocab_size)
    if prompts.source == "synthetic":
        built = _synthetic(config, tokenizer, vocab_size)
    else:
        texts, output_lengths, where = _texts(config, tokenizer)
        ids = file_prompt_ids(texts, tokenizer, config.num_prompts, config.input_tokens)
        built = PromptSet(ids, output_lengths, text_hash(texts), where)
    too_big = max(max(ids) for ids in built.prompt_ids)
    if too_big >= vocab_size:
        raise BackendError(f"token id {too_big} is beyond the model's vocabulary ({vocab_size})")
    output = describe_length(prompts.output_length, config.output_tokens)
    return PromptSet(
        built.prompt_ids,
        built.output_tokens_per_prompt,
        built.prompt_set_hash,
        f"{built.source_description}; output {output}",
    )


def _skipped(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> PromptSet:
    """Prompts ``skip`` … ``skip + num_prompts − 1`` of the set that starts at prompt 0,
    with their output lengths; hashed by their token ids."""
    skip, count = config.prompts.skip, config.num_prompts
    whole = build_prompt_set(
        msgspec.structs.replace(
            config,
            num_prompts=skip + count,
            prompts=msgspec.structs.replace(config.prompts, skip=0),
        ),
        tokenizer,
        vocab_size,
    )
    ids = whole.prompt_ids[skip:]
    return PromptSet(
        ids,
        whole.output_tokens_per_prompt[skip:],
        ids_hash(ids),
        f"{whole.source_description}; prompts {skip}–{skip + count - 1} of that sequence",
    )


def _texts(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[str], list[int], str]:
    """The texts of a text source cycled to ``num_prompts``, their output lengths and a
    description of the source."""
    prompts, count = config.prompts, config.num_prompts
    if prompts.source == "file":
        texts = _cycled(read_prompt_file(prompts.path or ""), count)
        return texts, _output_lengths(config, count), f"file {prompts.path}"
    if prompts.source == "sharegpt":
        shared = read_sharegpt(prompts.path, count)
        where = f"sharegpt {shared.source}"
        if shared.truncated_tail_bytes:
            where += f" (truncated file: {shared.truncated_tail_bytes} bytes after the cut)"
        texts = _cycled(list(shared.prompts), count)
        length = prompts.output_length
        if length is None or length.distribution != "reference":
            return texts, _output_lengths(config, count), where

        def count_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        replies = _cycled(list(shared.reference_completions), count)
        lengths = output_lengths_from_reference(replies, count_tokens)
        return texts, clip_lengths(lengths, config.output_tokens), where
    found = hf_texts(
        prompts.dataset, prompts.config_name, prompts.split, prompts.column, prompts.path, count
    )
    where = f"hf {prompts.dataset or prompts.path}"
    where += f" ({prompts.config_name})" if prompts.config_name else ""
    where += f" split {prompts.split or 'train'} column {prompts.column or 'text'}"
    return _cycled(found, count), _output_lengths(config, count), where


def build_prompt_ids(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> list[list[int]]:
    """The token ids of ``build_prompt_set``."""
    return build_prompt_set(config, tokenizer, vocab_size).prompt_ids


def row_stopping_criteria(
    input_width_tokens: int, targets: list[int], max_new_tokens: int, device: str
) -> Any:
    """The StoppingCriteriaList that stops each row at its target (tokens), or None when
    every target is ``max_new_tokens`` (the call then stops there by itself)."""
    if all(target == max_new_tokens for target in targets):
        return None
    if max(targets) > max_new_tokens or min(targets) < 1:
        raise ValueError(f"row targets {targets} outside [1, {max_new_tokens}]")
    from lem.workers.engines.pytorch.stopping import row_targets_criteria

    return row_targets_criteria(input_width_tokens, targets, device)


def make_batches(
    prompts: list[list[int]],
    batch_size: int,
    pad_token_id: int,
    device: str,
    output_tokens_per_prompt: list[int] | None = None,
    max_new_tokens: int | None = None,
) -> list[PreparedBatch]:
    """Left-pad ``prompts`` into batches of ``batch_size`` rows (the last may be smaller),
    with tensors created on ``device``.

    With ``output_tokens_per_prompt`` (each prompt's target, tokens), a batch whose rows do
    not all target ``max_new_tokens`` (default: the largest target) carries the stopping
    criterion that ends each row at its own target.
    """
    import torch

    targets = output_tokens_per_prompt or []
    if targets and len(targets) != len(prompts):
        raise ValueError(f"{len(targets)} output lengths for {len(prompts)} prompts")
    ceiling = max_new_tokens if max_new_tokens is not None else max(targets, default=0)
    batches = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
        row_targets = targets[start : start + batch_size]
        width = max(len(ids) for ids in rows)
        padded = [[pad_token_id] * (width - len(ids)) + ids for ids in rows]
        mask = [[0] * (width - len(ids)) + [1] * len(ids) for ids in rows]
        batches.append(
            PreparedBatch(
                input_ids=torch.tensor(padded, dtype=torch.long, device=device),
                attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                rows=len(rows),
                input_width_tokens=width,
                real_input_tokens=sum(len(ids) for ids in rows),
                output_tokens_per_row=tuple(row_targets),
                stopping_criteria=(
                    row_stopping_criteria(width, row_targets, ceiling, device)
                    if row_targets
                    else None
                ),
            )
        )
    return batches
