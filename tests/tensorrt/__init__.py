"""Tests of the TensorRT-LLM backend: translation, engine cache and stand-in engine (CPU)."""
