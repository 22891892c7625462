"""The scenario layer: how lem measures, written once for every engine. One scenario per
workload mode (``offline.py``, ``server.py``) owns warmup, the measured window's edges
(``window.py``, the only module that opens a window), passes, the prefill-only window,
arrivals and the ``GenerationStats`` it returns; an engine (``lem.workers.engines.base:
Engine``) only loads, prepares and runs batches or requests.

The worker runtime calls ``Backend.run``; every engine gets it from ``ScenarioBackend``,
which is ``run_scenario`` on that engine.
"""

from __future__ import annotations

import dataclasses
import threading

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import (
    BackendError,
    Engine,
    GenerationStats,
    MeasurementWindow,
    PhaseCallback,
)
from lem.workers.workload.scenarios.offline import run_offline
from lem.workers.workload.scenarios.server import run_server
from lem.workers.workload.scenarios.window import loaded_between


def run_scenario(
    engine: Engine,
    config: ExperimentConfig,
    window: MeasurementWindow,
    cancel: threading.Event,
    on_phase: PhaseCallback,
    min_window_s: float = 0.0,
    prefill_window: MeasurementWindow | None = None,
    load_window: MeasurementWindow | None = None,
) -> GenerationStats:
    """Load (or reuse) the model of ``config`` on ``engine``, then run the scenario of its
    workload mode: warmup, then the measured ``window`` (passes until ``min_window_s`` and
    ``config.min_iterations``, or the arrival process's requests) and, offline, the
    ``prefill_window``. ``load_window`` opens right before ``engine.load`` and closes right
    after it, only when the load was not a reuse (its energy is the load's, kept apart
    from the window's). Raises ``Cancelled`` when ``cancel`` is set (the window is then
    not closed), ``BackendError`` when the engine fails."""
    server = config.workload.mode == "server"
    if server and prefill_window is not None:
        raise BackendError("measure_prefill: server mode has no prefill-only window")
    on_phase("loading", config.model.name or config.model.path or config.model.source)
    load = loaded_between(load_window, lambda: engine.load(config, on_phase))
    if server:
        stats = run_server(engine, load, config, window, cancel, on_phase, min_window_s)
    else:
        stats = run_offline(
            engine, load, config, window, cancel, on_phase, min_window_s, prefill_window
        )
    # an engine may say what its run could not honour (optional: ``run_flags()``)
    run_flags = getattr(engine, "run_flags", None)
    if run_flags is None:
        return stats
    return dataclasses.replace(stats, engine_flags=sorted(run_flags()))


class ScenarioBackend:
    """The worker runtime's ``Backend.run`` for an engine class that derives from this:
    ``run_scenario`` on itself. An engine implements ``Engine``, never the method."""

    def run(
        self: Engine,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
        load_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        """See ``run_scenario``."""
        return run_scenario(
            self, config, window, cancel, on_phase, min_window_s, prefill_window, load_window
        )
