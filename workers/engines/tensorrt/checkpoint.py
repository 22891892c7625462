"""Random-weight Hugging Face checkpoints for the TensorRT-LLM backend.

TensorRT-LLM builds engines from a checkpoint folder (it has no random-weight load
format), so ``source: builtin``/``random`` models are written once, with transformers,
as a checkpoint of the named shape: ``config.json`` (the shape, lem's byte tokenizer's
special ids) and safetensors weights drawn with ``torch.manual_seed(model.seed)``. A
marker file written last makes a half-written folder count as absent. No tokenizer is
written: the engine runs with ``skip_tokenizer_init`` and lem sends token ids.

torch and transformers are imported inside ``write_random_checkpoint`` only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.tensorrt.translate import checkpoint_dtype, random_checkpoint_dir
from lem.workers.engines.vllm.translate import shape_hf_config, shape_name

MARKER_NAME = "lem-checkpoint.json"


def checkpoint_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint whose writing finished."""
    return (folder / MARKER_NAME).is_file() and (folder / "config.json").is_file()


def write_random_checkpoint(config: ExperimentConfig, cache_root: Path) -> Path:
    """The random-weight checkpoint folder of ``config`` under ``cache_root``, written
    now unless a complete one is there. Weights are seeded by ``model.seed`` and stored
    in ``checkpoint_dtype(config)``."""
    folder = random_checkpoint_dir(config, cache_root)
    if checkpoint_complete(folder):
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    as_dict = shape_hf_config(config)
    hf_config = AutoConfig.for_model(as_dict.pop("model_type"), **as_dict)
    torch.manual_seed(config.model.seed)
    model = AutoModelForCausalLM.from_config(hf_config)  # float32, then the stored dtype
    model = model.to(getattr(torch, checkpoint_dtype(config)))
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    marker = {"shape": shape_name(config), "seed": config.model.seed,
              "dtype": checkpoint_dtype(config)}  # fmt: skip
    (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
