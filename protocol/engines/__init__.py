"""The engines lem knows, as data the CUDA-free coordinator can read.

``registry.py`` lists them (``ENGINES``) and declares each one's config section; each
engine's own module here (``pytorch.py``, ``vllm.py``, ``tensorrt.py``) holds its section
type, its config checks and its ``EngineSpec`` (``spec.py``): name, capabilities,
environment and the worker entry point, a string the worker alone imports. Nothing here
imports an engine library or anything under ``lem.workers``.
"""
