"""A load sweep (``workload.sweep``, ``lem.protocol.workload.SweepConfig``) as the innermost
axis of its block, so its points are consecutive experiments: point 0 (the probe of a rate
sweep, measured first) at some position p, point k at p + k. The rates themselves follow
from the probe's measurement while the campaign runs (``execution/sweeps.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.planning.grid import Axis

SWEEP_FIELD = "workload.sweep"
POINT_FIELD = "workload.sweep.point"


def sweep_axis(path: Path, base: dict[str, Any], where: str) -> Axis | None:
    """The axis of ``base``'s sweep, or None without one. ``where`` names the base in
    errors (``experiment`` or ``experiments[i]``). Values are checked when points are built
    (``lem.protocol.workload``); here only the shape that sizes the axis."""
    workload = base.get("workload")
    sweep = workload.get("sweep") if isinstance(workload, dict) else None
    if not isinstance(sweep, dict):
        return None
    rates, levels = sweep.get("rates"), sweep.get("concurrencies")
    swept = "rate_per_s" if levels is None else "concurrency"
    if isinstance(workload, dict) and workload.get(swept) is not None:
        raise ConfigError(
            path, f"{where}.workload.{swept}", "is set by workload.sweep: leave it out"
        )
    if type(rates) is int and levels is None and 1 <= rates <= 100:
        steps: tuple[tuple[Any, ...], ...] = tuple((k,) for k in range(rates + 1))
        names = ("sweep=max", *(f"sweep={k}/{rates}" for k in range(1, rates + 1)))
        return Axis(SWEEP_FIELD, (POINT_FIELD,), steps, False, names)
    if isinstance(levels, list) and rates is None and 1 <= len(levels) <= 100:
        steps = tuple((k + 1, level) for k, level in enumerate(levels))
        names = tuple(f"concurrency={level}" for level in levels)
        return Axis(SWEEP_FIELD, (POINT_FIELD, "workload.concurrency"), steps, False, names)
    # Let the points' validation name the problem (it knows every rule).
    raise ConfigError(
        path, f"{where}.workload.sweep",
        "needs exactly one of rates (1 to 100) and concurrencies (a list of 1 to 100 levels)",
    )  # fmt: skip


def is_rate_sweep(base: dict[str, Any]) -> bool:
    """Whether ``base`` sweeps request rates (its points need the probe's result)."""
    workload = base.get("workload")
    sweep = workload.get("sweep") if isinstance(workload, dict) else None
    return isinstance(sweep, dict) and sweep.get("rates") is not None


def check_no_sweep_axis(path: Path, axes: list[Axis]) -> None:
    """A sweep is its own axis: no grid or zip axis may set it."""
    for axis in axes:
        for n, dotted in enumerate(axis.fields):
            values = [step[n] for step in axis.steps]
            whole = dotted == "workload" and any(
                isinstance(v, dict) and "sweep" in v for v in values
            )
            if whole or dotted.startswith(SWEEP_FIELD):
                raise ConfigError(
                    path, axis.field_label(dotted),
                    "a load sweep is an axis of its own: set workload.sweep in the experiment",
                )  # fmt: skip
