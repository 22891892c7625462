"""Prompt token ids and the padded batches fed to ``model.generate``.

Prompt ids are plain Python lists (no torch needed); ``make_batches`` turns them into
left-padded ``input_ids``/``attention_mask`` tensors on the target device (torch is
imported there). Token counts are counts of tokens, never bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lem.protocol.config import ExperimentConfig
from lem.workers.backend import BackendError
from lem.workers.pytorch.tokenizer import special_token_ids

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedBatch:
    """One batch ready for ``model.generate``: tensors already on the device.

    ``input_width_tokens`` is the padded width (new tokens start at that column);
    ``real_input_tokens`` counts the non-pad input tokens of all rows.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: int
    input_width_tokens: int
    real_input_tokens: int


def synthetic_prompt_ids(
    num_prompts: int, input_tokens: int, seed: int, vocab_size: int, excluded_ids: set[int]
) -> list[list[int]]:
    """``num_prompts`` prompts of exactly ``input_tokens`` seeded random ids each.

    Ids are drawn from ``[0, vocab_size)`` less ``excluded_ids`` (the special tokens).
    """
    allowed = [i for i in range(vocab_size) if i not in excluded_ids]
    if not allowed:
        raise BackendError(f"no token id below {vocab_size} is free of special tokens")
    rng = random.Random(seed)
    return [rng.choices(allowed, k=input_tokens) for _ in range(num_prompts)]


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


def build_prompt_ids(
    config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> list[list[int]]:
    """The ``config.num_prompts`` prompts of ``config`` as token ids (below ``vocab_size``)."""
    if config.prompts.source == "synthetic":
        limit = min(vocab_size, len(tokenizer))
        return synthetic_prompt_ids(
            config.num_prompts,
            config.input_tokens,
            config.prompts.seed,
            limit,
            special_token_ids(tokenizer),
        )
    texts = read_prompt_file(config.prompts.path or "")
    prompts = file_prompt_ids(texts, tokenizer, config.num_prompts, config.input_tokens)
    too_big = max(max(ids) for ids in prompts)
    if too_big >= vocab_size:
        raise BackendError(f"token id {too_big} is beyond the model's vocabulary ({vocab_size})")
    return prompts


def make_batches(
    prompts: list[list[int]], batch_size: int, pad_token_id: int, device: str
) -> list[PreparedBatch]:
    """Left-pad ``prompts`` into batches of ``batch_size`` rows (the last may be smaller),
    with tensors created on ``device``."""
    import torch

    batches = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
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
            )
        )
    return batches
