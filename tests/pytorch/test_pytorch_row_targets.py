"""Per-prompt output lengths in real ``generate`` calls on lem-tiny: each row stops at its
own target, tokens are counted exactly, and equal targets keep the plain fixed-length call."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import LengthDistribution, PromptConfig
from lem.workers.engines.pytorch.engine import PyTorchBackend, prepare_batches
from lem.workers.engines.pytorch.generation import count_new_tokens, generate_batch, generate_kwargs
from lem.workers.engines.pytorch.prompts import build_prompt_set
from lem.workers.workload.prompt_set import PromptSet

UNIFORM_OUT = LengthDistribution(distribution="uniform", min_tokens=1, max_tokens=9)
UNIFORM_IN = LengthDistribution(distribution="uniform", min_tokens=2, max_tokens=12)


def loaded_model(backend: PyTorchBackend) -> Any:
    run_config(backend, tiny_config(num_prompts=1, batch_size=1, output_tokens=1))
    assert backend._loaded is not None
    return backend._loaded


def generated(backend: PyTorchBackend, targets: list[int], ignore_eos: bool = True) -> list[Any]:
    """(sequences, batch) of each batch of 4 prompts whose output targets are ``targets``."""
    loaded = loaded_model(backend)
    config = tiny_config(num_prompts=len(targets), batch_size=4, ignore_eos=ignore_eos)
    prompt_ids = [[5 + i] * (3 + i) for i in range(len(targets))]
    prompt_set = PromptSet(prompt_ids, targets, "hash", "test")
    batches, generation = prepare_batches(config, loaded, prompt_set)
    with torch.inference_mode():
        return [(generate_batch(loaded.model, b, generation), b) for b in batches]


def test_each_row_stops_at_its_target_and_finished_rows_are_padded(
    backend: PyTorchBackend,
) -> None:
    targets = [2, 7, 4, 7, 1, 3]
    outputs = generated(backend, targets)
    loaded = backend._loaded
    assert loaded is not None
    total = 0
    for (sequences, batch), batch_targets in zip(outputs, [targets[:4], targets[4:]], strict=True):
        assert batch.output_tokens_per_row == tuple(batch_targets)
        new = sequences[:, batch.input_width_tokens :]
        assert new.shape[1] == max(batch_targets)  # the call ended when every row was done
        for row, target in zip(new.tolist(), batch_targets, strict=True):
            assert all(token == loaded.pad_token_id for token in row[target:])
        total += count_new_tokens(sequences, batch.input_width_tokens, loaded.eos_token_ids,
                                  True, batch.output_tokens_per_row)  # fmt: skip
    assert total == sum(targets)


def test_rows_generate_the_same_tokens_as_unstopped_rows(backend: PyTorchBackend) -> None:
    """Stopping a row early changes nothing before its target (greedy, same prompts)."""
    stopped = generated(backend, [3, 6, 6, 6])[0]
    full = generated(backend, [6, 6, 6, 6])[0]
    width = stopped[1].input_width_tokens
    assert stopped[0][0, : width + 3].tolist() == full[0][0, : width + 3].tolist()
    assert stopped[0][1:].tolist() == full[0][1:].tolist()


def test_equal_targets_add_no_stopping_criteria(backend: PyTorchBackend) -> None:
    [(sequences, batch)] = generated(backend, [6, 6, 6])
    assert batch.stopping_criteria is None
    kwargs = generate_kwargs(batch, generation_config=None)  # type: ignore[arg-type]
    assert set(kwargs) == {"input_ids", "attention_mask", "generation_config"}
    assert sequences.shape[1] == batch.input_width_tokens + 6


def test_a_batch_below_the_longest_target_still_stops_there(backend: PyTorchBackend) -> None:
    """Equal targets in a batch, but below another batch's: stopped by the criterion."""
    outputs = generated(backend, [2, 2, 2, 2, 8])
    first_sequences, first = outputs[0]
    assert first.stopping_criteria is not None
    assert first_sequences.shape[1] == first.input_width_tokens + 2
    assert outputs[1][1].stopping_criteria is None  # its one row targets the maximum


def test_a_run_counts_exactly_the_targets(backend: PyTorchBackend) -> None:
    prompts = PromptConfig(seed=2, input_length=UNIFORM_IN, output_length=UNIFORM_OUT)
    config = tiny_config(num_prompts=7, batch_size=3, input_tokens=12, output_tokens=9,
                         prompts=prompts, min_iterations=2)  # fmt: skip
    assert backend._loaded is None
    stats = run_config(backend, config)
    assert backend._loaded is not None
    expected = build_prompt_set(config, backend._loaded.tokenizer, backend._loaded.vocab_size)
    targets = expected.output_tokens_per_prompt
    assert len(set(targets)) > 2
    assert stats.repetitions == 2
    assert stats.output_tokens == 2 * sum(targets)
    assert stats.input_tokens == 2 * sum(len(ids) for ids in expected.prompt_ids)
    assert stats.prompt_set_hash == expected.prompt_set_hash
    assert stats.prompt_source == expected.source_description


def test_natural_stopping_counts_up_to_eos_within_the_target(backend: PyTorchBackend) -> None:
    loaded = loaded_model(backend)
    eos = loaded.eos_token_ids[0]

    def favour_eos(module: Any, inputs: Any, logits: Any) -> Any:
        boosted = logits.clone()
        boosted[..., eos] = 1e4  # EOS becomes every row's greedy choice
        return boosted

    prompts = PromptConfig(output_length=UNIFORM_OUT)
    hook = loaded.model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        stopped = run_config(backend, tiny_config(ignore_eos=False, prompts=prompts))
        ignored = run_config(backend, tiny_config(ignore_eos=True, prompts=prompts))
    finally:
        hook.remove()
    assert stopped.output_tokens == 5  # one token, the EOS, per prompt
    config = tiny_config(prompts=prompts)
    targets = build_prompt_set(config, loaded.tokenizer, loaded.vocab_size).output_tokens_per_prompt
    assert ignored.output_tokens == sum(targets) != 5 * len(targets)


def test_count_new_tokens_cuts_each_row_at_its_target_then_at_eos() -> None:
    sequences = torch.tensor([[9, 9, 4, 2, 4, 0], [9, 9, 4, 4, 4, 4]])
    assert count_new_tokens(sequences, 2, [2], True) == 8
    assert count_new_tokens(sequences, 2, [2], True, (1, 4)) == 5
    assert count_new_tokens(sequences, 2, [2], False, (3, 3)) == 2 + 3
    assert count_new_tokens(sequences, 2, [2], False, (1, 3)) == 1 + 3
    with pytest.raises(ValueError, match="1 targets for 2 rows"):
        count_new_tokens(sequences, 2, [2], True, (1,))
