"""The TensorRT-LLM engine cache: built engines kept on disk, keyed by what built them.

Building a TensorRT engine takes minutes; the engine depends only on the model, the
dtype, the parallel sizes, the quantisation, the engine's size limits, the TensorRT-LLM
version and the GPU model. ``engine_inputs`` lists exactly those; ``engine_key`` hashes
them. Layout under the cache root (``tensorrt.engine_cache_dir``)::

    <root>/<key>/engine/         the engine as ``LLM.save`` wrote it
    <root>/<key>/manifest.json   the inputs, TensorRT-LLM version and build time (s)
    <root>/checkpoints/<shape>-<dtype>-seed<seed>/   random-weight checkpoints

The manifest is written last (after the engine folder is complete), so a build that
died half-way is never a hit; a hit needs the manifest's inputs to equal today's.
Pure Python: the build itself is a callable passed in (the worker's ``LLM`` + ``save``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lem.protocol.config import ExperimentConfig
from lem.protocol.engines.tensorrt import parallel_sizes
from lem.protocol.variables import TRTLLM_ENGINE_CACHE
from lem.workers.engines.base import BackendError
from lem.workers.engines.tensorrt.translate import engine_limits, hf_model_dir, random_weights
from lem.workers.engines.vllm.translate import shape_name

CACHE_LAYOUT_VERSION = 1
CACHE_DIR_VARIABLE = TRTLLM_ENGINE_CACHE.name
MANIFEST_NAME = "manifest.json"
ENGINE_DIR_NAME = "engine"
ENGINE_CONFIG_NAME = "config.json"  # every saved TensorRT-LLM engine folder has one
Built = TypeVar("Built")


def cache_root(config: ExperimentConfig, environ: Mapping[str, str] | None = None) -> Path:
    """``tensorrt.engine_cache_dir``, else ``$LEM_TRTLLM_ENGINE_CACHE``, else
    ``$HOME/.cache/lem/trtllm-engines`` (workers do not receive ``XDG_CACHE_HOME``: the
    launcher's allow-list passes ``HOME`` and ``LEM_*``)."""
    env = os.environ if environ is None else environ
    if config.tensorrt.engine_cache_dir:
        return Path(config.tensorrt.engine_cache_dir).expanduser()
    if folder := TRTLLM_ENGINE_CACHE.get(env):
        return Path(folder).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".cache" / "lem" / "trtllm-engines"


def folder_fingerprint(folder: Path) -> str:
    """16 hex digits over the name, size (bytes) and modification time (ns) of each file
    directly in ``folder``: a replaced weight or config file changes it."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def model_identity(config: ExperimentConfig) -> dict[str, Any]:
    """What identifies the weights: a random shape and its seed, or an hf folder's path
    and fingerprint."""
    if random_weights(config):
        return {"source": "random", "shape": shape_name(config), "seed": config.model.seed}
    folder = hf_model_dir(config)
    return {"source": "hf", "path": str(folder), "files": folder_fingerprint(folder)}


def engine_inputs(
    config: ExperimentConfig, trtllm_version: str, gpu_names: list[str]
) -> dict[str, Any]:
    """Everything that changes the built engine (and nothing else: not the prompts, the
    window, sampling or the KV cache's memory share). ``gpu_names``: the engine's GPUs'
    models with their compute capability (an engine runs only on the GPU model it was
    built for)."""
    section = config.tensorrt
    tensor, pipeline = parallel_sizes(config)
    return {
        "layout": CACHE_LAYOUT_VERSION,
        "tensorrt_llm": trtllm_version,
        "gpus": list(gpu_names),
        "model": model_identity(config),
        "dtype": config.model.dtype,
        "tp_size": tensor,
        "pp_size": pipeline,
        "quantization": section.quantization,
        "kv_cache_quantization": section.kv_cache_quantization,
        "calibration_dataset": section.calibration_dataset,
        **engine_limits(config),
    }


def engine_key(inputs: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over ``inputs`` as sorted-key JSON."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedEngine:
    """An engine in the cache: its key, folder (``<root>/<key>``), whether it was found
    there (``hit``) or built now, and how long the build took (s, 0 for a hit)."""

    key: str
    folder: Path
    hit: bool
    build_s: float = 0.0

    @property
    def engine_dir(self) -> Path:
        return self.folder / ENGINE_DIR_NAME

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder``, None when absent or unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_hit(folder: Path, inputs: Mapping[str, Any]) -> bool:
    """Whether ``folder`` holds a complete engine built from exactly ``inputs``."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("layout") != CACHE_LAYOUT_VERSION:
        return False
    same_inputs = manifest.get("inputs") == json.loads(json.dumps(inputs))
    return same_inputs and (folder / ENGINE_DIR_NAME / ENGINE_CONFIG_NAME).is_file()


def ensure_engine(
    root: Path,
    inputs: Mapping[str, Any],
    policy: str,
    build: Callable[[Path], Built],
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[CachedEngine, Built | None]:
    """The cached engine of ``inputs`` under ``root``, building it with ``build`` when
    ``policy`` (``tensorrt.build_engine``) says so.

    ``build(staging_dir)`` must leave a complete engine in ``staging_dir`` (``LLM.save``);
    what it returns (the live engine) comes back with the entry, None for a hit. ``never``
    on a miss is a one-line ``BackendError``; ``always`` rebuilds even a hit.
    """
    key = engine_key(inputs)
    folder = root / key
    if policy != "always" and is_hit(folder, inputs):
        return CachedEngine(key, folder, hit=True), None
    if policy == "never":
        raise BackendError(
            f"tensorrt.build_engine: 'never', and no engine is cached for key {key} in {root}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # no hit while the engine is replaced
    staging = folder / f"{ENGINE_DIR_NAME}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started_s = clock()
    built = build(staging)
    build_s = clock() - started_s
    if not (staging / ENGINE_CONFIG_NAME).is_file():
        raise BackendError(f"the TensorRT-LLM build left no {ENGINE_CONFIG_NAME} in {staging}")
    engine = folder / ENGINE_DIR_NAME
    shutil.rmtree(engine, ignore_errors=True)
    staging.rename(engine)
    manifest = {
        "layout": CACHE_LAYOUT_VERSION,
        "key": key,
        "inputs": dict(inputs),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_s": round(build_s, 3),
    }
    partial = folder / f"{MANIFEST_NAME}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, folder / MANIFEST_NAME)
    return CachedEngine(key, folder, hit=False, build_s=build_s), built
