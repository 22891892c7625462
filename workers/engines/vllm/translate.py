"""lem's experiment config into vLLM's ``EngineArgs`` and ``SamplingParams``.

``engine_args`` and ``sampling_params`` return plain keyword-argument dicts and need no
vLLM (their rejections are tested in lem's own environment); ``to_engine_args`` and
``to_sampling_params`` build the real vLLM objects, importing vLLM only then. The contract
tests (``tests/vllm``) build those objects with the real vLLM package.

Random-weight models (``model.source`` ``builtin`` or ``random``): vLLM's
``load_format="dummy"`` still needs a model config, so ``model_dir`` writes the shape's
Hugging Face ``config.json`` into a folder and ``model`` points there. Such a folder has
no tokenizer: vLLM starts with ``skip_tokenizer_init`` and lem sends token ids (lem's byte
tokenizer made them), so EOS is lem's byte tokenizer's, passed as a stop token id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lem.protocol.capabilities import capability_problems
from lem.protocol.config import ExperimentConfig
from lem.protocol.engines.vllm import parallel_sizes, vllm_problems
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.shapes import BUILTIN_SHAPE, build_shape_config, shape_spec

if TYPE_CHECKING:
    from vllm import AsyncEngineArgs, EngineArgs, SamplingParams

# lem shape family -> the vLLM (and transformers) architecture name that runs it
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# the special ids of lem's byte tokenizer (lem.workers.engines.pytorch.tokenizer), without
# importing transformers: the random-weight models' config carries them
BYTE_PAD_ID, BYTE_BOS_ID, BYTE_EOS_ID = 0, 1, 2
CONFIG_FILE = "config.json"


def _reject(field: str, problem: str) -> BackendError:
    return BackendError(f"{field}: {problem}")


def check_supported(config: ExperimentConfig) -> None:
    """Raise ``BackendError`` (one line, naming the field) for the first setting the vLLM
    backend cannot run: the coordinator's checks (``capability_problems``: modes;
    ``vllm_problems``: settings), then a random shape with no vLLM architecture."""
    if config.backend != "vllm":
        raise _reject("backend", f"the vllm worker runs backend 'vllm', got {config.backend!r}")
    problems = capability_problems(config) + vllm_problems(config)
    if problems:
        raise _reject(*problems[0])
    if config.model.source in ("builtin", "random"):
        name = shape_name(config)
        family = shape_spec(name).family  # an unknown shape raises BackendError itself
        if family not in ARCHITECTURES:
            raise _reject("model.name", f"shape {name!r} ({family}) has no vLLM architecture")


def shape_name(config: ExperimentConfig) -> str:
    """The shape of a random-weight model: ``model.name``, or lem-tiny for ``builtin``."""
    return BUILTIN_SHAPE if config.model.source == "builtin" else (config.model.name or "")


def shape_hf_config(config: ExperimentConfig) -> dict[str, Any]:
    """The Hugging Face ``config.json`` contents of a random-weight model's shape (built
    by the installed transformers, so that vLLM's transformers reads what it wrote)."""
    name = shape_name(config)
    hf_config = build_shape_config(
        name, pad_token_id=BYTE_PAD_ID, bos_token_id=BYTE_BOS_ID, eos_token_id=BYTE_EOS_ID
    )
    hf_config.architectures = [ARCHITECTURES[shape_spec(name).family]]
    as_dict: dict[str, Any] = hf_config.to_dict()
    return as_dict


def model_dir(config: ExperimentConfig, scratch_dir: Path) -> str:
    """Where vLLM loads the model from: ``model.path`` for ``hf``; for random weights a
    folder under ``scratch_dir`` holding the shape's ``config.json`` (written here)."""
    if config.model.source == "hf":
        return str(Path(config.model.path or "").expanduser())
    folder = scratch_dir / f"lem-shape-{shape_name(config)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(shape_hf_config(config), indent=2) + "\n")
    return str(folder)


def random_weights(config: ExperimentConfig) -> bool:
    """Whether ``config``'s model has random weights (vLLM's ``dummy`` load format)."""
    return config.model.source in ("builtin", "random")


def engine_args(config: ExperimentConfig, scratch_dir: Path) -> dict[str, Any]:
    """vLLM ``EngineArgs`` keyword arguments of ``config`` (``BackendError`` when the
    vLLM backend cannot run it). Writes the random-weight model folder in
    ``scratch_dir``."""
    check_supported(config)
    vllm = config.vllm
    tensor, pipeline = parallel_sizes(config)
    random = random_weights(config)
    return {
        "model": model_dir(config, scratch_dir),
        "load_format": "dummy" if random else "auto",
        "skip_tokenizer_init": random,  # lem sends token ids; random models have none
        "dtype": config.model.dtype,
        "seed": config.model.seed if vllm.seed is None else vllm.seed,
        "tensor_parallel_size": tensor,
        "pipeline_parallel_size": pipeline,
        "gpu_memory_utilization": vllm.gpu_memory_utilization,
        "max_num_seqs": config.batch_size if vllm.max_num_seqs is None else vllm.max_num_seqs,
        "max_model_len": vllm.max_model_len or config.input_tokens + config.output_tokens,
        "enforce_eager": vllm.enforce_eager,
        "quantization": vllm.quantization,
        # lem's sampling settings only, never the model folder's generation_config.json
        "generation_config": "vllm",
        # an output every engine step: lem stamps each token when its step returns
        "stream_interval": 1,
        # lem repeats its prompt set until the window is long enough: with prefix caching
        # (vLLM's default) later passes would skip their prefill and under-report it
        "enable_prefix_caching": False,
    }


def sampling_params(
    config: ExperimentConfig, row_target_tokens: int, *, prefill_only: bool = False
) -> dict[str, Any]:
    """vLLM ``SamplingParams`` keyword arguments of one request whose output target is
    ``row_target_tokens`` tokens (``prefill_only``: one token, for the prefill window).

    Greedy is temperature 0; sampling is temperature 1 with no top-p/top-k cut (what
    ``do_sample`` does for lem's models). ``ignore_eos``: exactly the target (``min_tokens``
    = ``max_tokens``); otherwise EOS may stop a request early (for random-weight models
    EOS is lem's byte tokenizer's, a stop token id)."""
    if row_target_tokens < 1:
        raise _reject("output_tokens", f"a request's target must be >= 1, got {row_target_tokens}")
    target = 1 if prefill_only else row_target_tokens
    params: dict[str, Any] = {
        "n": 1,
        "temperature": 0.0 if config.greedy else 1.0,
        "top_p": 1.0,
        "max_tokens": target,
        "ignore_eos": config.ignore_eos,
        "seed": config.model.seed if config.vllm.seed is None else config.vllm.seed,
        "detokenize": False,  # lem counts token ids; text is never needed
    }
    if config.ignore_eos:
        params["min_tokens"] = target
    elif random_weights(config):
        params["stop_token_ids"] = [BYTE_EOS_ID]
    return params


def to_engine_args(config: ExperimentConfig, scratch_dir: Path) -> EngineArgs:
    """The real ``vllm.EngineArgs`` of ``config`` (imports vLLM)."""
    from vllm import EngineArgs

    return EngineArgs(**engine_args(config, scratch_dir))


def to_async_engine_args(config: ExperimentConfig, scratch_dir: Path) -> AsyncEngineArgs:
    """The real ``vllm.AsyncEngineArgs`` of ``config`` for server mode's ``AsyncLLM``
    (imports vLLM): the offline arguments, stats on (vLLM fills its request metrics only
    then), no per-request log lines."""
    from vllm import AsyncEngineArgs

    return AsyncEngineArgs(
        **engine_args(config, scratch_dir), disable_log_stats=False, enable_log_requests=False
    )


def to_sampling_params(
    config: ExperimentConfig,
    row_target_tokens: int,
    *,
    prefill_only: bool = False,
    stream_deltas: bool = False,
) -> SamplingParams:
    """The real ``vllm.SamplingParams`` of one request (imports vLLM). ``stream_deltas``:
    each output carries only the new tokens (``RequestOutputKind.DELTA``, server mode)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = sampling_params(config, row_target_tokens, prefill_only=prefill_only)
    if stream_deltas:
        params["output_kind"] = RequestOutputKind.DELTA
    return SamplingParams(**params)
