"""Prompt ids, prompt files, padded batches and the byte tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from pytorch_helpers import tiny_config

from lem.protocol.config import PromptConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.prompts import (
    build_prompt_ids,
    make_batches,
    read_prompt_file,
    synthetic_prompt_ids,
)
from lem.workers.engines.pytorch.tokenizer import (
    BOS_ID,
    BYTE_OFFSET,
    BYTE_VOCAB_SIZE,
    PAD_ID,
    build_byte_tokenizer,
)


def test_byte_tokenizer_is_one_token_per_byte_and_round_trips() -> None:
    tokenizer = build_byte_tokenizer()
    text = "héllo wörld\t!"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == BOS_ID
    assert ids[1:] == [BYTE_OFFSET + b for b in text.encode("utf-8")]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    every_byte = bytes(range(1, 128)).decode("ascii") + "\u00ff\U0001f600"
    assert max(tokenizer(every_byte)["input_ids"]) < BYTE_VOCAB_SIZE
    assert tokenizer.pad_token_id == PAD_ID


def test_synthetic_prompts_are_exact_seeded_and_avoid_specials() -> None:
    specials = {0, 1, 2}
    first = synthetic_prompt_ids(4, 17, seed=3, vocab_size=50, excluded_ids=specials)
    again = synthetic_prompt_ids(4, 17, seed=3, vocab_size=50, excluded_ids=specials)
    other = synthetic_prompt_ids(4, 17, seed=4, vocab_size=50, excluded_ids=specials)
    assert first == again
    assert first != other
    assert [len(ids) for ids in first] == [17] * 4
    flat = {i for ids in first for i in ids}
    assert not flat & specials
    assert max(flat) < 50


def test_synthetic_config_uses_tokenizer_and_model_vocab() -> None:
    tokenizer = build_byte_tokenizer()
    config = tiny_config(num_prompts=3, input_tokens=9, prompts=PromptConfig(seed=7))
    prompts = build_prompt_ids(config, tokenizer, vocab_size=512)
    assert prompts == build_prompt_ids(config, tokenizer, vocab_size=512)
    assert all(len(ids) == 9 for ids in prompts)
    assert all(BYTE_OFFSET <= i < BYTE_VOCAB_SIZE for ids in prompts for i in ids)


def test_txt_prompts_are_tokenised_cut_and_cycled(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("abc\n\n   \n0123456789abcdef\n", encoding="utf-8")
    config = tiny_config(
        prompts=PromptConfig(source="file", path=str(path)), num_prompts=5, input_tokens=6
    )
    prompts = build_prompt_ids(config, build_byte_tokenizer(), vocab_size=512)
    short = [BOS_ID, *(BYTE_OFFSET + b for b in b"abc")]
    long = [BOS_ID, *(BYTE_OFFSET + b for b in b"01234")]
    assert prompts == [short, long, short, long, short]


def test_jsonl_prompts_read_prompt_or_text(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    records = [{"prompt": "first"}, {"text": "second", "id": 2}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert read_prompt_file(str(path)) == ["first", "second"]
    config = tiny_config(
        prompts=PromptConfig(source="file", path=str(path)), num_prompts=2, input_tokens=3
    )
    prompts = build_prompt_ids(config, build_byte_tokenizer(), vocab_size=512)
    first = [BOS_ID, BYTE_OFFSET + ord("f"), BYTE_OFFSET + ord("i")]
    second = [BOS_ID, BYTE_OFFSET + ord("s"), BYTE_OFFSET + ord("e")]
    assert prompts == [first, second]


def test_jsonl_record_without_prompt_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"question": "where?"}\n', encoding="utf-8")
    with pytest.raises(BackendError, match="line 3"):
        read_prompt_file(str(path))


def test_missing_or_odd_prompt_files_fail(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"nowhere\.txt"):
        read_prompt_file(str(tmp_path / "nowhere.txt"))
    odd = tmp_path / "p.csv"
    odd.write_text("a\n", encoding="utf-8")
    with pytest.raises(BackendError, match=r"\.txt or \.jsonl"):
        read_prompt_file(str(odd))


def test_batches_are_left_padded_with_masks() -> None:
    batches = make_batches([[5, 6, 7], [8], [9, 10]], batch_size=2, pad_token_id=0, device="cpu")
    assert [b.rows for b in batches] == [2, 1]
    assert batches[0].input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batches[0].attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batches[0].input_width_tokens == 3
    assert batches[0].real_input_tokens == 4
    assert batches[1].input_ids.tolist() == [[9, 10]]
    assert batches[1].real_input_tokens == 2


@pytest.mark.parametrize("source", ["synthetic", "file"])
def test_skip_takes_a_contiguous_part_of_the_same_prompt_sequence(
    source: str, tmp_path: Path
) -> None:
    from lem.protocol.config import LengthDistribution
    from lem.workers.engines.pytorch.prompts import build_prompt_set

    tokenizer = build_byte_tokenizer()
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"prompt number {i}\n" for i in range(4)))  # cycled past 4
    lengths = LengthDistribution(distribution="uniform", min_tokens=1)
    prompts = PromptConfig(
        source=source,  # type: ignore[arg-type]
        path=str(path) if source == "file" else None,
        output_length=lengths,
        seed=5,
    )
    whole = build_prompt_set(tiny_config(num_prompts=9, prompts=prompts), tokenizer, 256)
    parts = [
        build_prompt_set(
            tiny_config(num_prompts=n, prompts=msgspec.structs.replace(prompts, skip=skip)),
            tokenizer,
            256,
        )
        for skip, n in ((0, 5), (5, 4))
    ]
    assert parts[0].prompt_ids + parts[1].prompt_ids == whole.prompt_ids
    assert (
        parts[0].output_tokens_per_prompt + parts[1].output_tokens_per_prompt
        == whole.output_tokens_per_prompt
    )
    assert parts[1].prompt_set_hash != parts[0].prompt_set_hash
    assert "prompts 5–8" in parts[1].source_description
