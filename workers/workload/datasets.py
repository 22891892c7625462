"""Prompts from ShareGPT-format JSON, read record by record with bounded memory.

The format is the one vLLM's benchmarks use: a top-level JSON array of records
``{"id": ..., "conversations": [{"from": "human" | "gpt" | ..., "value": "..."}, ...]}``.
Files in the wild can be truncated (the array never closes, the last record is cut), so the
reader decodes one record at a time from a chunked buffer, yields every complete record, and
reports how many bytes of the cut record were left unparsed instead of failing.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lem.protocol.errors import LemError

_SEPARATORS = " \t\r\n,\ufeff"


class ShareGptFormatError(LemError, ValueError):
    """The file is not a JSON array, or one record is larger than the reader's limit."""


@dataclass(frozen=True)
class ShareGptTurn:
    """One message: ``speaker`` is the record's ``from`` field ("human", "gpt", ...)."""

    speaker: str
    text: str


@dataclass(frozen=True)
class ShareGptRecord:
    """One conversation; ``id`` is None when the record has none."""

    id: str | None
    conversations: tuple[ShareGptTurn, ...]


def _to_record(value: Any) -> ShareGptRecord | None:
    """The record for one decoded JSON value, or None when it is malformed."""
    if not isinstance(value, dict):
        return None
    turns = value.get("conversations")
    if not isinstance(turns, list):
        return None
    parsed: list[ShareGptTurn] = []
    for turn in turns:
        if not isinstance(turn, dict):
            return None
        speaker, text = turn.get("from"), turn.get("value")
        if not isinstance(speaker, str) or not isinstance(text, str):
            return None
        parsed.append(ShareGptTurn(speaker, text))
    record_id = value.get("id")
    return ShareGptRecord(None if record_id is None else str(record_id), tuple(parsed))


class ShareGptReader(Iterator[ShareGptRecord]):
    """Iterates the records of a ShareGPT JSON array, reading ``chunk_bytes`` at a time.

    The buffer holds at most one record plus about two chunks (and never more than
    ``max_record_bytes`` of undecoded text, counted in characters). Counters, valid as the
    iteration proceeds:

    - ``records_yielded`` / ``records_skipped``: well-formed records, and JSON values that
      were not records (not an object, no ``conversations`` list, a turn without string
      ``from``/``value``).
    - ``truncated_tail_bytes``: None until the end is reached; then the bytes after the last
      complete value that could not be decoded (0 for a well-formed file).
    - ``array_closed``: whether the closing ``]`` was found.
    - ``peak_buffer_chars``: the largest the decode buffer grew, in characters.
    """

    def __init__(
        self, path: Path, chunk_bytes: int = 1 << 20, max_record_bytes: int = 64 << 20
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be ≥ 1, got {chunk_bytes}")
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_record_bytes = max_record_bytes
        self.records_yielded = 0
        self.records_skipped = 0
        self.truncated_tail_bytes: int | None = None
        self.array_closed = False
        self.peak_buffer_chars = 0
        self._records = self._generate()

    def __iter__(self) -> ShareGptReader:
        return self

    def __next__(self) -> ShareGptRecord:
        return next(self._records)

    def _generate(self) -> Iterator[ShareGptRecord]:
        decoder = json.JSONDecoder()
        text_decoder = codecs.getincrementaldecoder("utf-8")()
        buffer, position, eof = "", 0, False
        # Retry a failed decode only once the buffer has grown past this many characters,
        # so a record spanning many small chunks is not re-parsed once per chunk.
        retry_at_chars = 0
        started = False
        with self.path.open("rb") as stream:

            def refill() -> bool:
                """Append one chunk to the buffer; False at end of file."""
                nonlocal buffer, position, eof
                chunk_bytes = stream.read(self.chunk_bytes)
                if not chunk_bytes:
                    eof = True
                    return False
                buffer = buffer[position:] + text_decoder.decode(chunk_bytes)
                position = 0
                self.peak_buffer_chars = max(self.peak_buffer_chars, len(buffer))
                return True

            while True:
                while position < len(buffer) and buffer[position] in _SEPARATORS:
                    position += 1
                if position >= len(buffer) or len(buffer) - position < retry_at_chars:
                    if refill():
                        continue
                    if position >= len(buffer):
                        break
                if not started:
                    if buffer[position] != "[":
                        raise ShareGptFormatError(f"{self.path}: not a JSON array")
                    started, position = True, position + 1
                    continue
                if buffer[position] == "]":
                    self.array_closed = True
                    position = len(buffer)
                    break
                try:
                    value, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError:
                    if eof:
                        break
                    pending_chars = len(buffer) - position
                    if pending_chars > self.max_record_bytes:
                        raise ShareGptFormatError(
                            f"{self.path}: a record exceeds {self.max_record_bytes} bytes"
                        ) from None
                    retry_at_chars = max(2 * pending_chars, pending_chars + 1)
                    continue
                if end == len(buffer) and not eof:
                    # A number or literal may continue in the next chunk: decode it again.
                    retry_at_chars = len(buffer) - position + 1
                    continue
                retry_at_chars = 0
                position = end
                record = _to_record(value)
                if record is None:
                    self.records_skipped += 1
                else:
                    self.records_yielded += 1
                    yield record
        pending_bytes = len(text_decoder.getstate()[0])
        self.truncated_tail_bytes = len(buffer[position:].encode("utf-8")) + pending_bytes


def iter_sharegpt_records(path: Path, chunk_bytes: int = 1 << 20) -> ShareGptReader:
    """The records of a ShareGPT file, streamed; see ``ShareGptReader`` for its counters."""
    return ShareGptReader(path, chunk_bytes=chunk_bytes)


@dataclass(frozen=True)
class ShareGptPrompts:
    """Prompts chosen from a ShareGPT file, with what reading it found.

    ``reference_completions[i]`` is the reply to ``prompts[i]``. ``records_without_prompt``
    counts records with no human turn of at least ``min_prompt_chars`` characters followed
    by a gpt turn. ``truncated_tail_bytes`` is None when ``limit`` was reached before the
    end of the file.
    """

    source: str
    prompts: tuple[str, ...]
    reference_completions: tuple[str, ...]
    records_read: int
    records_skipped: int
    records_without_prompt: int
    truncated_tail_bytes: int | None
    prompt_set_hash: str


def prompt_set_hash(prompts: Iterable[str]) -> str:
    """SHA-256 (hex) of the prompts in order, each length-prefixed so boundaries count."""
    digest = hashlib.sha256(b"lem-prompt-set-v1\n")
    for prompt in prompts:
        encoded = prompt.encode("utf-8")
        digest.update(f"{len(encoded)}:".encode("ascii"))
        digest.update(encoded)
    return digest.hexdigest()


def _prompt_and_reply(record: ShareGptRecord, min_prompt_chars: int) -> tuple[str, str] | None:
    """The first human turn and the first gpt turn after it, like vLLM's benchmark."""
    turns = record.conversations
    for index, turn in enumerate(turns):
        if turn.speaker == "human":
            if len(turn.text) < min_prompt_chars:
                return None
            reply = next((t.text for t in turns[index + 1 :] if t.speaker == "gpt"), None)
            return None if reply is None else (turn.text, reply)
    return None


def sharegpt_prompts(
    path: Path, limit: int, min_prompt_chars: int = 1, chunk_bytes: int = 1 << 20
) -> ShareGptPrompts:
    """Up to ``limit`` prompts (first human turn) with their reference completions."""
    if limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    reader = iter_sharegpt_records(path, chunk_bytes=chunk_bytes)
    prompts: list[str] = []
    completions: list[str] = []
    without_prompt = 0
    if limit > 0:
        for record in reader:
            pair = _prompt_and_reply(record, min_prompt_chars)
            if pair is None:
                without_prompt += 1
                continue
            prompts.append(pair[0])
            completions.append(pair[1])
            if len(prompts) >= limit:
                break
    return ShareGptPrompts(
        source=str(path),
        prompts=tuple(prompts),
        reference_completions=tuple(completions),
        records_read=reader.records_yielded + reader.records_skipped,
        records_skipped=reader.records_skipped,
        records_without_prompt=without_prompt,
        truncated_tail_bytes=reader.truncated_tail_bytes,
        prompt_set_hash=prompt_set_hash(prompts),
    )


def output_lengths_from_reference(
    completions: Iterable[str], count_tokens: Callable[[str], int], min_output_tokens: int = 1
) -> list[int]:
    """Output lengths (tokens) from reference completions, at least ``min_output_tokens``."""
    return [max(min_output_tokens, count_tokens(text)) for text in completions]
