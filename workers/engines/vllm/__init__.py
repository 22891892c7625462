"""The vLLM backend of lem workers (offline mode; not yet run on a GPU)."""
