"""The ``pytorch:`` section of an experiment: settings only the PyTorch backend reads."""

from __future__ import annotations

from typing import Literal

import msgspec


class PyTorchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings only the PyTorch (transformers) backend reads.

    ``cache_implementation``: ``dynamic`` (transformers' default) or ``static`` (a
    preallocated KV cache). ``compile``: None lets transformers decide (it compiles the
    decode step with torch.compile when the cache is static and the device CUDA); false
    never compiles; true compiles (mode ``reduce-overhead``) and needs the static cache.
    ``attn_implementation``: passed to transformers when the model is built (``auto`` lets
    transformers choose).
    """

    cache_implementation: Literal["dynamic", "static"] = "dynamic"
    compile: bool | None = None
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
