"""Every ``LEM_*`` environment variable lem reads, declared once: its name, what it does,
who reads it and what unset means.

Product code reads a variable through its entry here (``NVML_REPLAY.get()``), never by
a name of its own; ``tests/test_variables.py`` fails on a ``"LEM_…"`` string outside this
module, on a ``LEM_`` name in lem's text that is not declared here, and when the table
of environment variables in docs/architecture.md lists other names. ``lem doctor``
prints the ones set, with their meaning; ``lem doctor --variables`` lists them all.

Workers receive every ``LEM_*`` variable (``PREFIX``: the launcher's allow-list), so one
set for ``lem`` reaches its workers too. An empty value counts as unset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "LEM_"
BACKEND_PART = "<BACKEND>"  # a family's placeholder: the backend's name, upper case


@dataclass(frozen=True)
class Variable:
    """One variable, or a family of them (``LEM_<BACKEND>_PYTHON``: one per backend)."""

    name: str
    meaning: str
    read_by: str  # coordinator, workers (which), tests
    default: str  # what unset (or empty) means
    secret: bool = False  # its value is never shown (lem doctor shows that it is set)

    def named(self, backend: str | None = None) -> str:
        """The variable's name; a family's member for ``backend`` (``vllm``: LEM_VLLM_PYTHON)."""
        if BACKEND_PART not in self.name:
            return self.name
        if backend is None:
            raise ValueError(f"{self.name} needs a backend")
        return self.name.replace(BACKEND_PART, backend.upper())

    def get(
        self, environ: Mapping[str, str] | None = None, backend: str | None = None
    ) -> str | None:
        """Its value in ``environ`` (default ``os.environ``); None where unset or empty."""
        env = os.environ if environ is None else environ
        return env.get(self.named(backend)) or None

    def shown(self, value: str) -> str:
        """``value`` as lem prints it: a secret's is hidden."""
        return "(set; hidden)" if self.secret and value else value

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this variable (or a member of this family)."""
        pattern = re.escape(self.name).replace(re.escape(BACKEND_PART), "[A-Z0-9]+")
        return re.fullmatch(pattern, name) is not None


BACKEND_PYTHON = Variable(
    "LEM_<BACKEND>_PYTHON",
    "the interpreter that runs that backend's workers (rule 1 of "
    "execution/environments.py); an engine's contract tests run in it too",
    "coordinator, tests",
    "rules 2-4: a Nix-built environment, a synced venv, this Python",
)
LEGACY_BACKEND_PYTHON = Variable(
    "LEM_PYTHON_<BACKEND>",
    "the older spelling of LEM_<BACKEND>_PYTHON, still read after it",
    "coordinator",
    "as LEM_<BACKEND>_PYTHON unset",
)
NIX_WORKER_PYTHONS = Variable(
    "LEM_NIX_WORKER_PYTHONS",
    "lock=python:…, built worker environments (rule 2)",
    "coordinator",
    "no built Nix environments",
)
NIX_WORKER_DRVS = Variable(
    "LEM_NIX_WORKER_DRVS",
    "lock=drv:…, the workers' derivations, set by the Nix wrapper and dev shell "
    "(rule 2; built on first use)",
    "coordinator",
    "no Nix derivations",
)
ENV_CACHE_DIR = Variable(
    "LEM_ENV_CACHE_DIR",
    "where lem env sync keeps venvs",
    "coordinator",
    "$XDG_CACHE_HOME/lem/envs",
)
ENV_LOCKS_DIR = Variable(
    "LEM_ENV_LOCKS_DIR",
    "folder of engine locks (<lock>/requirements.txt) instead of the shipped lem.envs "
    "(tests; a site's own locks)",
    "coordinator",
    "the shipped locks",
)
TRTLLM_ENGINE_CACHE = Variable(
    "LEM_TRTLLM_ENGINE_CACHE",
    "where a worker keeps the engines it builds when its config's engine_cache_dir is unset",
    "workers (the engine with an engine cache)",
    "~/.cache/lem/trtllm-engines",
)
TELEMETRY_INTERVAL_S = Variable(
    "LEM_TELEMETRY_INTERVAL_S",
    "the telemetry sidecar's sampling interval, seconds (0 turns it off)",
    "workers",
    "0.1",
)
NVML_REPLAY = Variable(
    "LEM_NVML_REPLAY",
    "serve NVML from this trace file instead of the driver (tests, demos)",
    "coordinator and workers",
    "the driver's NVML",
)
NVML_REPLAY_STATE = Variable(
    "LEM_NVML_REPLAY_STATE",
    "a JSON file holding a replayed NVML's set power limits and locked clocks, and every "
    "set/reset call, shared by the processes that replay (tests)",
    "coordinator, workers and tests (with LEM_NVML_REPLAY)",
    "each process keeps its replay's settings in memory",
)
NVML_REPLAY_REFUSE_SETS = Variable(
    "LEM_NVML_REPLAY_REFUSE_SETS",
    "any value: every setter of a replayed NVML fails with Insufficient Permissions, as "
    "without root (tests)",
    "coordinator and workers (with LEM_NVML_REPLAY)",
    "a replayed NVML's setters succeed",
)
WORKER_BACKEND = Variable(
    "LEM_WORKER_BACKEND",
    "module:Class replacing a worker's backend (tests: lem.workers.engines.sleep:SleepBackend)",
    "workers",
    "the configured backend",
)
SLEEP_HANG = Variable(
    "LEM_SLEEP_HANG",
    "the sleep backend hangs (until cancelled) in experiments whose name contains it "
    "(timeout tests)",
    "workers (sleep backend)",
    "never hangs",
)
SLEEP_LOAD_S = Variable(
    "LEM_SLEEP_LOAD_S",
    "UUID=SECONDS[,…]: how long the sleep backend's first load takes on those GPUs "
    "(data-parallel start tests)",
    "workers (sleep backend)",
    "0 s",
)
SLEEP_SLOTS = Variable(
    "LEM_SLEEP_SLOTS",
    "N: the sleep backend's server mode generates at most N requests at once, the rest "
    "wait (load-sweep tests: a server that saturates)",
    "workers (sleep backend)",
    "no limit",
)
H100_STORE = Variable(
    "LEM_H100_STORE",
    "the store of the H100 campaigns that tests/test_results_table.py reads",
    "tests",
    "docs/data/h100-parallel-check.db",
)
NO_PAGER = Variable(
    "LEM_NO_PAGER",
    "any value: long output (lem results show) prints straight to the terminal, never "
    "through a pager",
    "coordinator",
    "output longer than the terminal goes through $PAGER (default less) when stdout is a terminal",
)
CURVE_SERVER_KEY = Variable(
    "LEM_CURVE_SERVER_KEY",
    "the coordinator's CurveZMQ public key (Z85), set by the launcher for a tcp:// endpoint",
    "workers (set by the coordinator)",
    "no CURVE: a worker refuses a tcp:// endpoint",
)
CURVE_PUBLIC_KEY = Variable(
    "LEM_CURVE_PUBLIC_KEY",
    "the worker's CurveZMQ public key (Z85), made for the campaign, set by the launcher",
    "workers (set by the coordinator)",
    "as LEM_CURVE_SERVER_KEY unset",
)
CURVE_SECRET_KEY = Variable(
    "LEM_CURVE_SECRET_KEY",
    "the worker's CurveZMQ secret key (Z85), made for the campaign, set by the launcher; "
    "never shown, and taken out of the worker's environment as it is read",
    "workers (set by the coordinator)",
    "as LEM_CURVE_SERVER_KEY unset",
    secret=True,
)

VARIABLES: tuple[Variable, ...] = (
    BACKEND_PYTHON,
    LEGACY_BACKEND_PYTHON,
    NIX_WORKER_PYTHONS,
    NIX_WORKER_DRVS,
    ENV_CACHE_DIR,
    ENV_LOCKS_DIR,
    TRTLLM_ENGINE_CACHE,
    TELEMETRY_INTERVAL_S,
    NVML_REPLAY,
    NVML_REPLAY_STATE,
    NVML_REPLAY_REFUSE_SETS,
    WORKER_BACKEND,
    SLEEP_HANG,
    SLEEP_LOAD_S,
    SLEEP_SLOTS,
    H100_STORE,
    NO_PAGER,
    CURVE_SERVER_KEY,
    CURVE_PUBLIC_KEY,
    CURVE_SECRET_KEY,
)


def declared(name: str) -> Variable | None:
    """The entry ``name`` is (or is a member of), or None: not a variable lem reads."""
    return next((v for v in VARIABLES if v.matches(name)), None)


def set_variables(
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, str, Variable | None]]:
    """Each ``LEM_*`` variable set in ``environ`` (default ``os.environ``), sorted by name:
    (name, value, its entry, or None where lem reads no such variable)."""
    env = os.environ if environ is None else environ
    return [(k, env[k], declared(k)) for k in sorted(env) if k.startswith(PREFIX)]
