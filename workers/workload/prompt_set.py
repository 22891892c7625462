"""A backend's prompt set (token ids, per-prompt output lengths, hash) and seeded lengths.

Nothing here imports torch: lengths are drawn with Python's ``random`` from seeds derived
from the prompt config's ``seed`` and the length's role ("input"/"output"), so the same
config gives the same lengths on every machine and the two roles draw independently.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from lem.protocol.config import LengthDistribution
from lem.workers.workload.datasets import prompt_set_hash


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one experiment, ready for a backend.

    ``prompt_ids[i]`` are prompt i's token ids; ``output_tokens_per_prompt[i]`` is how many
    tokens to generate for it (its target: exact when EOS is ignored, a maximum
    otherwise). ``prompt_set_hash`` identifies the prompts (see ``text_hash`` and
    ``ids_hash``); ``source_description`` says in one line where they came from.
    """

    prompt_ids: list[list[int]]
    output_tokens_per_prompt: list[int]
    prompt_set_hash: str
    source_description: str

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.output_tokens_per_prompt):
            raise ValueError(
                f"{len(self.prompt_ids)} prompts but "
                f"{len(self.output_tokens_per_prompt)} output lengths"
            )
        if any(n < 1 for n in self.output_tokens_per_prompt):
            raise ValueError("every output length must be >= 1 token")

    @property
    def input_tokens(self) -> int:
        """Input tokens of all prompts."""
        return sum(len(ids) for ids in self.prompt_ids)

    @property
    def output_tokens(self) -> int:
        """Output tokens targeted over all prompts."""
        return sum(self.output_tokens_per_prompt)


def cycled_batch(index: int, size: int, count: int) -> range:
    """Prompt indices of batch ``index`` when batches of ``size`` are taken from a set of
    ``count`` prompts round and round (a batch stops at the set's end): the warmup batches
    of engines that batch the whole set by themselves."""
    first = (index * size) % count
    return range(first, min(first + size, count))


def text_hash(texts: Iterable[str]) -> str:
    """The hash of a prompt set given as texts (before tokenisation), in order."""
    return prompt_set_hash(texts)


def ids_hash(prompt_ids: Iterable[list[int]]) -> str:
    """The hash of a prompt set given as token ids: each prompt's ids as decimal numbers
    joined by single spaces, hashed like texts."""
    return prompt_set_hash(" ".join(str(i) for i in ids) for ids in prompt_ids)


def length_rng(seed: int, role: str) -> random.Random:
    """The random stream of the ``role`` ("input"/"output") lengths of prompt seed ``seed``."""
    return random.Random(f"lem-{role}-length-{seed}")


def sample_lengths(
    length: LengthDistribution | None, count: int, cap_tokens: int, rng: random.Random
) -> list[int]:
    """``count`` token counts from ``length`` (None: fixed), each clipped to
    [max(1, ``min_tokens``), ``max_tokens`` or ``cap_tokens``].

    ``reference`` lengths are not drawn (they come from the data): that is a ValueError.
    """
    if length is None or length.distribution == "fixed":
        return [cap_tokens] * count
    upper = length.max_tokens if length.max_tokens is not None else cap_tokens
    lower = max(1, length.min_tokens if length.min_tokens is not None else 1)
    if lower > upper:
        raise ValueError(f"empty length range [{lower}, {upper}]")
    if length.distribution == "uniform":
        return [rng.randint(lower, upper) for _ in range(count)]
    if length.distribution == "normal":
        if length.mean_tokens is None or length.std_tokens is None:
            raise ValueError("a normal length needs mean_tokens and std_tokens")
        mean, std = length.mean_tokens, length.std_tokens
        return [min(upper, max(lower, round(rng.gauss(mean, std)))) for _ in range(count)]
    raise ValueError(f"'{length.distribution}' lengths are not drawn from a seed")


def clip_lengths(lengths: Iterable[int], cap_tokens: int) -> list[int]:
    """``lengths`` clipped to [1, ``cap_tokens``]."""
    return [min(cap_tokens, max(1, n)) for n in lengths]


def describe_length(length: LengthDistribution | None, cap_tokens: int) -> str:
    """A short description of a length distribution, e.g. ``uniform[16, 64]``."""
    if length is None or length.distribution == "fixed":
        return f"fixed {cap_tokens}"
    upper = length.max_tokens if length.max_tokens is not None else cap_tokens
    if length.distribution == "uniform":
        return f"uniform[{length.min_tokens}, {upper}]"
    if length.distribution == "normal":
        lower = length.min_tokens if length.min_tokens is not None else 1
        return f"normal({length.mean_tokens:g}, {length.std_tokens:g}) in [{lower}, {upper}]"
    return f"reference <= {cap_tokens}"
