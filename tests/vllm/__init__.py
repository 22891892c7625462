"""Tests of the vLLM backend: translation, rejections and (in its own venv) the real package."""
