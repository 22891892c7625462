"""A bare ``transformers`` generate loop, written without lem, as lem's throughput reference.

A long-lived process: it builds a random-weight model at the llama-3.2-1b shape once, then
reads one JSON request a line on stdin (``{"batch_size": 8, "num_prompts": 16,
"input_tokens": 128, "output_tokens": 128, "cache": "dynamic"}``) and answers one JSON line
with the window's duration (s), output tokens, throughput (tok/s) and NVML energy (J).
Used by ``vs_bare_generate.py``; needs a CUDA GPU.
"""

from __future__ import annotations

import json
import sys
import time

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
        with torch.inference_mode():
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
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
