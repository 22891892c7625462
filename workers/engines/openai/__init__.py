"""The openai engine: an OpenAI-compatible inference server driven over HTTP."""
