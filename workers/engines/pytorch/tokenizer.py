"""Offline tokenizers: lem's byte tokenizer for random weights, local HF and GGUF ones.

The byte tokenizer is deterministic and needs no file: every UTF-8 byte is one token,
ids ``BYTE_OFFSET + byte`` (so 3..258), after the specials ``<pad>`` (0), ``<bos>`` (1)
and ``<eos>`` (2). A BOS is prepended to each encoded text, as real LLM tokenizers do.
Every id is below ``BYTE_VOCAB_SIZE`` (259), which any lem shape's vocabulary exceeds.
Nothing is downloaded: HF and GGUF tokenizers load with ``local_files_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lem.protocol.config import ModelConfig
from lem.workers.engines.base import BackendError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
BYTE_OFFSET = len(SPECIAL_TOKENS)
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (what ByteLevel emits)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def build_byte_tokenizer() -> PreTrainedTokenizerBase:
    """lem's byte-level tokenizer (see the module docstring), left-padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    byte_chars = _bytes_to_unicode()
    for byte in range(256):
        vocab[byte_chars[byte]] = BYTE_OFFSET + byte
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )


def load_tokenizer(model: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer for ``model``: the byte tokenizer for builtin/random sources, else the
    local HF folder's or the GGUF file's own tokenizer. A missing path is a BackendError."""
    if model.source in ("builtin", "random"):
        return build_byte_tokenizer()
    path = Path(model.path or "").expanduser()
    if not model.path or not path.exists():
        raise BackendError(f"model path not found: {model.path}")
    from transformers import AutoTokenizer

    try:
        if model.source == "hf":
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
    except (OSError, ValueError) as error:
        raise BackendError(f"cannot load the tokenizer of {path}: {error}") from error
    tokenizer.padding_side = "left"
    return tokenizer


def pad_token_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to left-pad with: the tokenizer's pad token, else its EOS, else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(token_id, int):
            return token_id
    return 0


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every special or added token id of ``tokenizer`` (never drawn as synthetic input)."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    ids.update(int(i) for i in tokenizer.added_tokens_decoder)
    return ids
