"""PyTorch (transformers) backend of lem workers; torch is imported lazily."""
