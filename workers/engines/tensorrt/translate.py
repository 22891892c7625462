"""lem's experiment config into TensorRT-LLM's ``LLM`` and ``SamplingParams`` arguments.

Experimental: written against the documented LLM API of TensorRT-LLM 1.0 (the TensorRT
engine flow, ``tensorrt_llm._tensorrt_engine.LLM``, which was ``tensorrt_llm.LLM`` in the
0.x releases) and its ``tensorrt_llm.llmapi`` classes ``BuildConfig``, ``QuantConfig``,
``QuantAlgo``, ``CalibConfig``, ``KvCacheConfig`` and ``SamplingParams``. It has never
run with TensorRT-LLM installed: no wheel fits lem's development machine. Only this
translation (pure Python, no TensorRT-LLM needed) is tested.

The arguments are plain dicts whose values may be ``TrtObject`` (a TensorRT-LLM class to
build, by name, with its own keyword arguments) or ``TrtEnum`` (a member of a TensorRT-LLM
enum, by name); ``materialise`` builds the real objects from a namespace holding those
classes (``tensorrt_llm.llmapi`` in the worker, a stand-in in tests).

Random-weight models (``builtin``/``random``) have no tokenizer: the engine starts with
``skip_tokenizer_init`` and lem sends token ids made by its byte tokenizer, whose EOS and
pad ids are passed in every ``SamplingParams`` (``end_id``, ``pad_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lem.protocol.capabilities import capability_problems
from lem.protocol.config import ExperimentConfig
from lem.protocol.engines.tensorrt import (
    CALIBRATED,
    KV_CACHE_QUANT_ALGOS,
    QUANT_ALGOS,
    parallel_sizes,
    tensorrt_problems,
)
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.shapes import shape_spec
from lem.workers.engines.vllm.translate import ARCHITECTURES, BYTE_EOS_ID, BYTE_PAD_ID, shape_name

API_WRITTEN_AGAINST = "TensorRT-LLM 1.0 LLM API (TensorRT engine flow)"
# the dtype a random-weight checkpoint is written in when model.dtype is 'auto' (what the
# PyTorch backend picks on CUDA)
AUTO_CHECKPOINT_DTYPE = "bfloat16"


@dataclass(frozen=True)
class TrtObject:
    """A TensorRT-LLM object to build: ``class_name`` (in ``tensorrt_llm.llmapi``) called
    with ``kwargs``, whose values may themselves be ``TrtObject`` or ``TrtEnum``."""

    class_name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class TrtEnum:
    """The member ``member`` of the TensorRT-LLM enum ``enum_name`` (e.g. QuantAlgo.FP8)."""

    enum_name: str
    member: str


def _reject(field: str, problem: str) -> BackendError:
    return BackendError(f"{field}: {problem}")


def check_supported(config: ExperimentConfig) -> None:
    """Raise ``BackendError`` (one line, naming the field) for the first setting the
    TensorRT-LLM backend cannot run: the coordinator's checks (``capability_problems``:
    modes; ``tensorrt_problems``: settings), then a random shape with no architecture."""
    if config.backend != "tensorrt":
        raise _reject(
            "backend", f"the tensorrt worker runs backend 'tensorrt', got {config.backend!r}"
        )
    problems = capability_problems(config) + tensorrt_problems(config)
    if problems:
        raise _reject(*problems[0])
    if random_weights(config):
        name = shape_name(config)
        family = shape_spec(name).family  # an unknown shape raises BackendError itself
        if family not in ARCHITECTURES:
            raise _reject("model.name", f"shape {name!r} ({family}) has no TensorRT-LLM model")


def random_weights(config: ExperimentConfig) -> bool:
    """Whether ``config``'s model has random weights (written as a checkpoint first)."""
    return config.model.source in ("builtin", "random")


def checkpoint_dtype(config: ExperimentConfig) -> str:
    """The dtype a random-weight checkpoint is written in: ``model.dtype``, or bfloat16
    for ``auto``."""
    return AUTO_CHECKPOINT_DTYPE if config.model.dtype == "auto" else config.model.dtype


def random_checkpoint_dir(config: ExperimentConfig, cache_root: Path) -> Path:
    """Where the random-weight checkpoint of ``config``'s shape, dtype and seed lives."""
    name = f"{shape_name(config)}-{checkpoint_dtype(config)}-seed{config.model.seed}"
    return cache_root / "checkpoints" / name


def hf_model_dir(config: ExperimentConfig) -> Path:
    """The local Hugging Face folder of an ``hf`` model (``model.path``, expanded)."""
    return Path(config.model.path or "").expanduser().resolve()


def engine_limits(config: ExperimentConfig) -> dict[str, int | None]:
    """The engine's size limits: requests in flight, tokens a step, and the longest prompt
    and sequence (all in tokens but ``max_batch_size``, a request count); None: TensorRT-LLM
    chooses."""
    section = config.tensorrt
    return {
        "max_batch_size": section.max_batch_size or config.batch_size,
        "max_num_tokens": section.max_num_tokens,
        "max_input_len": config.input_tokens,
        "max_seq_len": config.input_tokens + config.output_tokens,
        "max_beam_width": 1,
    }


def _quant_objects(config: ExperimentConfig) -> dict[str, TrtObject]:
    section = config.tensorrt
    algo = QUANT_ALGOS[section.quantization]
    kv_algo = KV_CACHE_QUANT_ALGOS[section.kv_cache_quantization]
    objects: dict[str, TrtObject] = {}
    if algo is not None or kv_algo is not None:
        objects["quant_config"] = TrtObject(
            "QuantConfig",
            {
                "quant_algo": TrtEnum("QuantAlgo", algo) if algo else None,
                "kv_cache_quant_algo": TrtEnum("QuantAlgo", kv_algo) if kv_algo else None,
            },
        )
    if section.quantization in CALIBRATED and section.calibration_dataset is not None:
        dataset = str(Path(section.calibration_dataset).expanduser())
        objects["calib_config"] = TrtObject("CalibConfig", {"calib_dataset": dataset})
    return objects


def _runtime_arguments(config: ExperimentConfig, tokenizer_dir: str | None) -> dict[str, Any]:
    """Arguments of both a build and a load: parallelism, tokenizer, KV cache."""
    tensor, pipeline = parallel_sizes(config)
    return {
        "tokenizer": tokenizer_dir,
        "skip_tokenizer_init": tokenizer_dir is None,  # lem sends token ids
        "tensor_parallel_size": tensor,
        "pipeline_parallel_size": pipeline,
        "kv_cache_config": TrtObject(
            "KvCacheConfig",
            {
                "free_gpu_memory_fraction": config.tensorrt.free_gpu_memory_fraction,
                # every pass sends the same prompts: reused KV blocks would skip their
                # prefill from the second pass on, so each pass must do all its work
                "enable_block_reuse": False,
            },
        ),
    }


def tokenizer_dir(config: ExperimentConfig) -> str | None:
    """The tokenizer folder TensorRT-LLM loads (the hf model's), None for random weights."""
    return None if random_weights(config) else str(hf_model_dir(config))


def build_arguments(config: ExperimentConfig, checkpoint_dir: Path) -> dict[str, Any]:
    """``LLM`` keyword arguments that build ``config``'s engine from the Hugging Face
    checkpoint in ``checkpoint_dir`` (``BackendError`` when the backend cannot run it)."""
    check_supported(config)
    limits = {k: v for k, v in engine_limits(config).items() if v is not None}
    return {
        "model": str(checkpoint_dir),
        "dtype": config.model.dtype,
        **_runtime_arguments(config, tokenizer_dir(config)),
        "build_config": TrtObject("BuildConfig", limits),
        **_quant_objects(config),
    }


def load_arguments(config: ExperimentConfig, engine_dir: Path) -> dict[str, Any]:
    """``LLM`` keyword arguments that load the engine saved in ``engine_dir``. Its build
    settings are in the engine; the runtime limits are passed again, equal to the
    engine's, so the executor never falls back to a default ``BuildConfig``'s."""
    check_supported(config)
    limits = engine_limits(config)
    runtime = ("max_batch_size", "max_num_tokens", "max_seq_len")
    return {
        "model": str(engine_dir),
        **_runtime_arguments(config, tokenizer_dir(config)),
        **{name: limits[name] for name in runtime if limits[name] is not None},
    }


def sampling_params(
    config: ExperimentConfig, row_target_tokens: int, *, prefill_only: bool = False
) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments of one request whose output target is
    ``row_target_tokens`` tokens (``prefill_only``: one token, for the prefill window).

    Greedy is ``top_k`` 1; sampling is temperature 1 over the whole vocabulary (``top_k``
    0, ``top_p`` 1). ``ignore_eos``: exactly the target (``min_tokens`` = ``max_tokens``);
    otherwise EOS may stop a request early. Random-weight models pass lem's byte
    tokenizer's EOS and pad ids (they have no tokenizer for TensorRT-LLM to ask)."""
    if row_target_tokens < 1:
        raise _reject("output_tokens", f"a request's target must be >= 1, got {row_target_tokens}")
    target = 1 if prefill_only else row_target_tokens
    params: dict[str, Any] = {
        "n": 1,
        "max_tokens": target,
        "ignore_eos": config.ignore_eos,
        "seed": config.model.seed,
        "detokenize": False,  # lem counts token ids; text is never needed
    }
    if config.greedy:
        params["top_k"] = 1
    else:
        params.update(temperature=1.0, top_k=0, top_p=1.0)
    if config.ignore_eos:
        params["min_tokens"] = target
    if random_weights(config):
        params.update(end_id=BYTE_EOS_ID, pad_id=BYTE_PAD_ID)
    return params


def materialise(value: Any, namespace: Any) -> Any:
    """``value`` with every ``TrtObject``/``TrtEnum`` in it (dict values, list items) built
    from the classes of ``namespace`` (e.g. the ``tensorrt_llm.llmapi`` module)."""
    if isinstance(value, TrtEnum):
        return getattr(_named(namespace, value.enum_name), value.member)
    if isinstance(value, TrtObject):
        kwargs = {k: materialise(v, namespace) for k, v in value.kwargs.items()}
        return _named(namespace, value.class_name)(**kwargs)
    if isinstance(value, dict):
        return {k: materialise(v, namespace) for k, v in value.items()}
    if isinstance(value, list):
        return [materialise(v, namespace) for v in value]
    return value


def _named(namespace: Any, name: str) -> Any:
    found = getattr(namespace, name, None)
    if found is None:
        where = getattr(namespace, "__name__", type(namespace).__name__)
        raise BackendError(
            f"TensorRT-LLM has no {name} in {where} (lem's worker was written against "
            f"{API_WRITTEN_AGAINST})"
        )
    return found
