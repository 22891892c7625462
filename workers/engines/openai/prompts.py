"""The openai engine's prompts: texts, since the server tokenises (lem has no tokenizer
of the served model). Input token counts come from each request's usage report.

``synthetic``: seeded words, one word per input token asked (``input_length`` or
``input_tokens``; how many tokens the server makes of them is its usage report's
``prompt_tokens``). ``file``, ``sharegpt``, ``hf``: the texts, cycled to ``num_prompts``
(not cut to ``input_tokens``: that needs the model's tokenizer). Output lengths are
drawn as for every engine; ``reference`` lengths (sharegpt) need a tokenizer and are
refused.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.prompts import read_prompt_file
from lem.workers.workload.prompt_set import (
    PromptSet,
    describe_length,
    length_rng,
    sample_lengths,
    text_hash,
)
from lem.workers.workload.prompt_sources import hf_texts, read_sharegpt

_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her they this had not are "
    "but one which were all she there would their we him been has when who will more no if "
    "out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also "
    "did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last"
)
WORDS = tuple(_WORD_TEXT.split(" "))


@dataclass(frozen=True)
class TextPrompts:
    """The experiment's prompt texts and the ``PromptSet`` the scenario layer reads (its
    ``prompt_ids`` are empty: the server tokenises)."""

    texts: list[str]
    prompt_set: PromptSet


def build_text_prompts(config: ExperimentConfig) -> TextPrompts:
    prompts, count = config.prompts, config.num_prompts
    total = prompts.skip + count
    if prompts.source == "synthetic":
        rng = length_rng(prompts.seed, "input")
        lengths = sample_lengths(prompts.input_length, total, config.input_tokens, rng)
        words = random.Random(f"lem-openai-words-{prompts.seed}")
        texts = [" ".join(words.choices(WORDS, k=n)) for n in lengths]
        where = (
            f"synthetic words seed {prompts.seed}, input "
            f"{describe_length(prompts.input_length, config.input_tokens)} word(s)"
        )
    else:
        if prompts.output_length is not None and prompts.output_length.distribution == "reference":
            raise BackendError(
                "prompts.output_length 'reference' needs the model's tokenizer, which the "
                "openai backend does not have"
            )
        if prompts.source == "file":
            found, where = read_prompt_file(prompts.path or ""), f"file {prompts.path}"
        elif prompts.source == "sharegpt":
            shared = read_sharegpt(prompts.path, total)
            found, where = list(shared.prompts), f"sharegpt {shared.source}"
        else:
            found = hf_texts(
                prompts.dataset, prompts.config_name, prompts.split, prompts.column,
                prompts.path, total,
            )  # fmt: skip
            where = f"hf {prompts.dataset or prompts.path}"
        texts = [found[i % len(found)] for i in range(total)]
    texts = texts[prompts.skip :]
    outputs = sample_lengths(
        prompts.output_length, count, config.output_tokens, length_rng(prompts.seed, "output")
    )
    output = describe_length(prompts.output_length, config.output_tokens)
    prompt_set = PromptSet(
        [[] for _ in texts],
        outputs,
        text_hash(texts),
        f"{where}; output {output}; server-tokenised",
    )
    return TextPrompts(texts, prompt_set)
