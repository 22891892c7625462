"""lem's per-engine environment locks, shipped as package data of ``lem.envs``.

One folder per engine environment (``pytorch``, ``pytorch-cpu``, ``vllm``, ``tensorrt``):
its input (``pyproject.toml``), uv's lock (``uv.lock``), the hash-pinned
``requirements.txt`` and any ``*.txt`` note (``UNRESOLVED.txt``). Read them with
``importlib.resources.files("lem.envs")``, from a checkout and an installed lem alike.
``make_locks.py`` (re)makes and checks them; it runs only as a script.
"""
