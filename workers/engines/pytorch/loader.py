"""Load a model (and its tokenizer) per ``ModelConfig``; nothing is ever downloaded.

Sources: ``builtin`` (lem-tiny) and ``random`` (a named shape) get seeded random weights
built directly on the target device and dtype; ``hf`` loads a local folder and ``gguf`` a
local GGUF file (dequantised by transformers, which needs ``accelerate`` and ``gguf``).
torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lem.protocol.config import ModelConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.shapes import BUILTIN_SHAPE, build_shape_config
from lem.workers.engines.pytorch.sharding import spread_over_gpus
from lem.workers.engines.pytorch.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    load_tokenizer,
    pad_token_id_of,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer and what generation needs to know.

    ``eos_token_ids`` are the ids that end a sequence (empty if the model has none);
    ``vocab_size`` is the model's output vocabulary (token count).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str
    dtype_name: str
    vocab_size: int
    pad_token_id: int
    eos_token_ids: list[int]
    load_duration_s: float


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 on CPU; other names map directly."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise BackendError(f"unknown dtype {dtype!r}")
    return resolved


def _attn_kwargs(pytorch: PyTorchConfig) -> dict[str, Any]:
    if pytorch.attn_implementation == "auto":
        return {}
    return {"attn_implementation": pytorch.attn_implementation}


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos: Any = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(i) for i in eos] if isinstance(eos, list | tuple) else [int(eos)]


def _random_model(
    model: ModelConfig, pytorch: PyTorchConfig, device: str, dtype: torch.dtype, gpu_count: int
) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    name = BUILTIN_SHAPE if model.source == "builtin" else (model.name or "")
    if model.source == "builtin" and model.name not in (None, BUILTIN_SHAPE):
        raise BackendError(f"source 'builtin' only has {BUILTIN_SHAPE!r}, not {model.name!r}")
    config = build_shape_config(name, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    torch.manual_seed(model.seed)
    sharded = device == "cuda" and gpu_count > 1
    with torch.device("cpu" if sharded else device):
        built = AutoModelForCausalLM.from_config(config, dtype=dtype, **_attn_kwargs(pytorch))
    return spread_over_gpus(built, gpu_count) if sharded else built


def _pretrained_model(
    model: ModelConfig, pytorch: PyTorchConfig, device: str, dtype: torch.dtype, gpu_count: int
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    path = Path(model.path or "").expanduser()
    if not model.path or not path.exists():
        raise BackendError(f"model path not found: {model.path}")
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, **_attn_kwargs(pytorch)}
    if device == "cuda":
        kwargs["device_map"] = "auto" if gpu_count > 1 else "cuda"
    try:
        if model.source == "hf":
            return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise BackendError(f"cannot load model {path}: {error}") from error


def load_model(
    model: ModelConfig, pytorch: PyTorchConfig, device: str, gpu_count: int = 1
) -> LoadedModel:
    """Load ``model`` on ``device`` ("cuda" or "cpu"), in eval mode, timed in seconds.

    ``gpu_count`` GPUs (> 1) hold one copy spread over them: an hf/gguf model with
    transformers' ``device_map="auto"``, random weights built on the CPU and dispatched
    balanced (``lem.workers.engines.pytorch.sharding``).
    """
    started_s = time.perf_counter()
    dtype = resolve_dtype(model.dtype, device)
    tokenizer = load_tokenizer(model)
    if model.source in ("builtin", "random"):
        built = _random_model(model, pytorch, device, dtype, gpu_count)
    else:
        built = _pretrained_model(model, pytorch, device, dtype, gpu_count)
    built.eval()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    vocab_size = int(built.get_output_embeddings().weight.shape[0])
    return LoadedModel(
        model=built,
        tokenizer=tokenizer,
        device=device,
        dtype_name=str(getattr(built, "dtype", dtype)).removeprefix("torch."),  # what loaded
        vocab_size=vocab_size,
        pad_token_id=pad_token_id_of(tokenizer),
        eos_token_ids=_eos_ids(built, tokenizer),
        load_duration_s=time.perf_counter() - started_s,
    )
