"""Seeded prompt/output length distributions, the prompt-set hash and PromptSet checks."""

from __future__ import annotations

import statistics

import pytest

from lem.protocol.config import LengthDistribution
from lem.workers.workload.datasets import prompt_set_hash
from lem.workers.workload.prompt_set import (
    PromptSet,
    clip_lengths,
    describe_length,
    ids_hash,
    length_rng,
    sample_lengths,
    text_hash,
)

UNIFORM = LengthDistribution(distribution="uniform", min_tokens=5, max_tokens=40)
NORMAL = LengthDistribution(distribution="normal", mean_tokens=20.0, std_tokens=15.0)


def draw(
    length: LengthDistribution | None, seed: int, count: int = 200, cap: int = 64
) -> list[int]:
    return sample_lengths(length, count, cap, length_rng(seed, "output"))


@pytest.mark.parametrize("length", [UNIFORM, NORMAL], ids=["uniform", "normal"])
def test_lengths_are_seeded(length: LengthDistribution) -> None:
    first = draw(length, seed=1)
    assert first == draw(length, seed=1)
    assert first != draw(length, seed=2)
    assert len(set(first)) > 10  # really drawn, not one value repeated


def test_input_and_output_roles_draw_independently() -> None:
    inputs = sample_lengths(UNIFORM, 50, 64, length_rng(3, "input"))
    outputs = sample_lengths(UNIFORM, 50, 64, length_rng(3, "output"))
    assert inputs != outputs


def test_uniform_stays_in_its_bounds_and_reaches_both_ends() -> None:
    lengths = draw(UNIFORM, seed=0, count=2000)
    assert min(lengths) == 5 and max(lengths) == 40
    assert 20 < statistics.fmean(lengths) < 25  # (5 + 40) / 2 = 22.5


def test_uniform_without_max_uses_the_experiment_cap() -> None:
    lengths = draw(LengthDistribution(distribution="uniform", min_tokens=60), seed=0, cap=64)
    assert set(lengths) == {60, 61, 62, 63, 64}


def test_normal_is_clipped_to_at_least_one_and_to_the_cap() -> None:
    lengths = draw(NORMAL, seed=0, count=2000, cap=50)
    assert min(lengths) == 1 and max(lengths) == 50  # both clips hit (mean 20, std 15)
    inside = [n for n in lengths if 1 < n < 50]
    assert 15 < statistics.fmean(inside) < 25


def test_normal_honours_its_own_clip_bounds() -> None:
    bounded = LengthDistribution(
        distribution="normal", mean_tokens=20.0, std_tokens=30.0, min_tokens=10, max_tokens=30
    )
    lengths = draw(bounded, seed=5, count=1000)
    assert min(lengths) == 10 and max(lengths) == 30


def test_zero_std_normal_is_its_rounded_mean() -> None:
    constant = LengthDistribution(distribution="normal", mean_tokens=7.6, std_tokens=0.0)
    assert draw(constant, seed=9, count=5) == [8] * 5


def test_fixed_or_absent_is_the_cap_exactly() -> None:
    assert draw(None, seed=0, count=3, cap=17) == [17, 17, 17]
    assert draw(LengthDistribution(), seed=0, count=2, cap=9) == [9, 9]


def test_reference_lengths_are_not_drawn() -> None:
    with pytest.raises(ValueError, match="not drawn"):
        draw(LengthDistribution(distribution="reference"), seed=0)


def test_clip_and_describe() -> None:
    assert clip_lengths([0, 3, 99], 10) == [1, 3, 10]
    assert describe_length(None, 32) == "fixed 32"
    assert describe_length(UNIFORM, 64) == "uniform[5, 40]"
    assert describe_length(NORMAL, 64) == "normal(20, 15) in [1, 64]"


def test_hashes_are_stable_and_change_with_any_prompt() -> None:
    texts = ["first prompt", "second"]
    assert text_hash(texts) == prompt_set_hash(texts) == text_hash(list(texts))
    assert text_hash(["first prompt", "second!"]) != text_hash(texts)
    ids = [[5, 6, 7], [8]]
    assert ids_hash(ids) == prompt_set_hash(["5 6 7", "8"])
    assert ids_hash([[5, 6, 7], [9]]) != ids_hash(ids)
    assert ids_hash([[5, 6], [7, 8]]) != ids_hash([[5], [6, 7, 8]])


def test_prompt_set_checks_its_lengths() -> None:
    made = PromptSet([[1, 2], [3]], [4, 1], "h", "test")
    assert made.input_tokens == 3 and made.output_tokens == 5
    with pytest.raises(ValueError, match="2 prompts but 1 output"):
        PromptSet([[1, 2], [3]], [4], "h", "test")
    with pytest.raises(ValueError, match=">= 1"):
        PromptSet([[1]], [0], "h", "test")
