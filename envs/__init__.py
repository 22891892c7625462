"""lem's per-engine environment locks (the repository's ``envs/``), shipped as package data
and read with ``importlib.resources.files("lem.envs")`` (``lem.protocol.env_locks``)."""
