"""The TensorRT-LLM backend of lem workers (offline mode; experimental, never run on a GPU)."""
