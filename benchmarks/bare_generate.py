"""A bare ``transformers`` generate loop, written without lem, as lem's throughput reference.

A long-lived process: it builds a random-weight model at the llama-3.2-1b shape once, then
reads one JSON request a line on stdin (``{"batch_size": 8, "num_prompts": 16,
"input_tokens": 128, "output_tokens": 128, "cache": "dynamic"}``) and answers one JSON line
with the window's duration (s), output tokens, throughput (tok/s) and NVML energy (J). With
``"zeus": true`` in a request the window is also a ZeusMonitor window (Zeus's own CUDA
synchronise and counter reads around it), answered as ``zeus_energy_j``/``zeus_time_s``.
Used by ``vs_bare_generate.py``; needs a CUDA GPU (and the ``zeus`` package for ``zeus``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pynvml
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

LLAMA_3_2_1B = LlamaConfig(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)


def zeus_monitor() -> Any:
    """ZeusMonitor on the one visible GPU. Zeus parses ``CUDA_VISIBLE_DEVICES`` as integers
    and fails on the GPU UUIDs lem pins its workers (and this loop) with: for Zeus's start
    only, the UUIDs are given as NVML indices, then put back (CUDA has read them already)."""
    from zeus.monitor import ZeusMonitor

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible or visible.replace(",", "").isdigit():
        return ZeusMonitor(gpu_indices=[0])
    indices = [
        str(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)))
        for uuid in visible.split(",")
    ]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(indices)
    try:
        return ZeusMonitor(gpu_indices=[0])
    finally:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible


def main() -> None:
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(LLAMA_3_2_1B).eval()
        torch.set_default_dtype(torch.float32)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    generator = torch.Generator().manual_seed(0)
    dtype = str(next(model.parameters()).dtype)
    print(json.dumps({"ready": True, "dtype": dtype}), flush=True)
    monitor: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        batch_size, num_prompts = request["batch_size"], request["num_prompts"]
        ids = torch.randint(100, 32000, (num_prompts, request["input_tokens"]), generator=generator)
        batches = [ids[i : i + batch_size].cuda() for i in range(0, num_prompts, batch_size)]
        masks = [torch.ones_like(b) for b in batches]
        config = GenerationConfig(
            max_new_tokens=request["output_tokens"],
            do_sample=False,
            eos_token_id=[],
            pad_token_id=0,
            cache_implementation="static" if request["cache"] == "static" else None,
        )
        outputs = []
        if request.get("zeus") and monitor is None:
            monitor = zeus_monitor()
        with torch.inference_mode():
            if request.get("zeus"):
                monitor.begin_window("window")
            torch.cuda.synchronize()
            energy_start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            start = time.perf_counter()
            for batch, mask in zip(batches, masks, strict=True):
                outputs.append(
                    model.generate(input_ids=batch, attention_mask=mask, generation_config=config)
                )
            torch.cuda.synchronize()
            duration_s = time.perf_counter() - start
            energy_j = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - energy_start_mj) / 1000
            zeus = monitor.end_window("window") if request.get("zeus") else None
        tokens = sum(
            o.shape[0] * (o.shape[1] - b.shape[1]) for o, b in zip(outputs, batches, strict=True)
        )
        print(
            json.dumps(
                {
                    "duration_s": duration_s,
                    "output_tokens": tokens,
                    "output_tokens_per_s": tokens / duration_s,
                    "energy_j": energy_j,
                    "zeus_energy_j": sum(zeus.gpu_energy.values()) if zeus else None,
                    "zeus_time_s": zeus.time if zeus else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
