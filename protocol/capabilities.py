"""Which workload modes each backend runs, checked by the coordinator before any worker
starts (CUDA-free: nothing here imports a backend library). The table is the registered
engines' ``modes`` (``lem.protocol.engines``).

An unsupported (backend, mode) pair, or a supported mode with a setting the backend cannot
honour in it, is a config problem: ``lem`` exits 2 with one line naming the file and the
field (``workload.mode`` for the pair itself).
"""

from __future__ import annotations

from typing import Any

from lem.protocol.engines.registry import ENGINES, engine_named
from lem.protocol.engines.spec import Experiment, ModeSupport, Problem

__all__ = ["BACKEND_MODES", "ModeSupport", "capability_problems", "mode_support"]

# backend → mode → support: each engine's ``modes`` (its spec, ``lem.protocol.engines``).
BACKEND_MODES: dict[str, dict[str, ModeSupport]] = {
    engine.name: dict(engine.modes) for engine in ENGINES
}


def mode_support(backend: str, mode: str) -> ModeSupport | None:
    """The entry of (``backend``, ``mode``), or None when the table has none."""
    return BACKEND_MODES.get(backend, {}).get(mode)


def _dotted(config: Experiment, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def capability_problems(config: Experiment) -> list[Problem]:
    """Problems of running ``config.workload.mode`` on ``config.backend`` (an
    ``ExperimentConfig``), as (dotted field path, problem)."""
    mode, backend = config.workload.mode, config.backend
    support = mode_support(backend, mode)
    if support is None or support.unsupported_reason is not None:
        why = support.unsupported_reason if support else "no entry in lem's capability table"
        return [("workload.mode", f"backend '{backend}' does not support mode '{mode}': {why}")]
    problems: list[Problem] = []
    if support.max_gpus is not None and config.gpu_count > support.max_gpus:
        problems.append(
            ("workload.mode",
             f"backend '{backend}' runs mode '{mode}' on at most {support.max_gpus} GPU(s), "
             f"got gpu_count {config.gpu_count}")
        )  # fmt: skip
    for field, value, why in support.conflicts:
        if _dotted(config, field) == value:
            problems.append((field, f"{value!r} cannot be used in mode '{mode}': {why}"))
    engine = engine_named(backend)
    problems.extend(engine.mode_problems(config, engine.section_of(config)))
    return problems
