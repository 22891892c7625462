"""What an engine declares to lem: ``EngineSpec``, one per engine module, listed in
``registry.py``.

Config validation (``lem.protocol.config``), the capability table
(``lem.protocol.capabilities``), environment resolution and ``lem env``
(``lem.coordinator.execution.environments``), ``lem doctor``, the worker's probe and its
runtime read these specs; none of them names an engine.

The hooks take the experiment typed as ``Experiment`` (below: the fields every engine may
read) and the engine's own section, so an engine module needs nothing from
``lem.protocol.config``: the config imports the engines, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

Problem = tuple[str, str]  # (dotted field path, what is wrong)
S = TypeVar("S", bound=msgspec.Struct)


class ModelView(Protocol):
    @property
    def source(self) -> str: ...


class WorkloadView(Protocol):
    @property
    def mode(self) -> str: ...


class Experiment(Protocol):
    """The fields of an ``ExperimentConfig`` every engine's hooks may read."""

    @property
    def backend(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def gpu_count(self) -> int: ...
    @property
    def num_prompts(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def model(self) -> ModelView: ...
    @property
    def workload(self) -> WorkloadView: ...


@dataclass(frozen=True)
class ModeSupport:
    """How a backend runs one workload mode, or why it does not.

    ``unsupported_reason``: None when the mode runs. ``max_gpus``: the most GPUs
    (``gpu_count``) the mode runs on; None for any. ``conflicts``: (dotted field, value,
    why) settings the mode cannot honour.
    """

    how: str
    unsupported_reason: str | None = None
    max_gpus: int | None = None
    conflicts: tuple[tuple[str, Any, str], ...] = ()


@dataclass(frozen=True)
class EngineEnvironment:
    """Where an engine's worker runs and how lem checks that it can.

    ``locks``: the shipped locks (``envs/<lock>/``) its environment may be made from, the
    default first; one named ``<lock>-cpu`` is the CPU twin, the default where no NVIDIA
    driver is loaded. ``distributions``: what ``lem env list`` needs installed in the
    interpreter. ``probe_imports``: the modules ``lem doctor``'s probe imports there (with
    ``torch`` among them it also counts CUDA devices). ``engine_distribution``: whose
    version ``lem env list`` shows; ``worker_distribution``: whose version the worker's
    hello reports. ``missing_hint``: said after "not installed"; ``experimental_note``:
    what "experimental" means for it, one line.
    """

    locks: tuple[str, ...]
    distributions: tuple[str, ...]
    probe_imports: tuple[str, ...]
    engine_distribution: str
    worker_distribution: str
    missing_hint: str = ""
    experimental_note: str = ""


@dataclass(frozen=True)
class DataParallel(Generic[S]):
    """An engine that can run one worker per GPU, each with a share of the prompts
    (``lem.coordinator.execution.data_parallel``). ``applies``: whether an experiment of
    this engine (``gpu_count`` > 1) runs so; ``one_gpu``: its section for one such worker."""

    applies: Callable[[Experiment, S], bool]
    one_gpu: Callable[[S], S]


def no_problems(config: Experiment, section: Any) -> list[Problem]:
    return []


@dataclass(frozen=True)
class EngineSpec(Generic[S]):
    """One engine: everything lem outside the engine's own packages knows about it.

    ``name``: the ``backend:`` value, the name of its config section and of its worker
    package (``lem.workers.engines.<name>``). ``section``: the section's type (declared in
    ``registry.EngineSections`` under ``name``). ``entry_point``: ``module:Class`` of its
    ``Backend``, imported by the worker only. ``modes``: the workload modes it runs
    (``lem.protocol.capabilities``). ``experimental``: labelled so by ``lem env list`` and
    ``lem doctor``.

    Hooks (each gets the experiment and this engine's section):

    - ``problems``: impossible settings, as (dotted field, problem); called for every
      experiment, whichever its backend: return none when ``config.backend`` is another
      engine, unless a setting of this section is itself wrong there.
    - ``mode_problems``: settings this engine cannot honour in ``config.workload.mode``;
      called for experiments of this engine whose mode it runs.
    - ``load_key``: what of the section decides the loaded model (``lem.protocol.config.load_key``);
      default: the whole section, for experiments of this engine only.
      ``load_key_fields``: the section's fields it reads; empty: all of them.
    - ``hashed``: the section's part of ``config_hash`` (given its builtins; None leaves
      it out); default: the whole section, for experiments of this engine only, so that
      a new engine changes no existing experiment's hash.
    - ``data_parallel``: set when the engine runs one worker per GPU.
    """

    name: str
    section: type[S]
    entry_point: str
    environment: EngineEnvironment
    modes: Mapping[str, ModeSupport]
    experimental: bool = False
    problems: Callable[[Experiment, S], list[Problem]] = no_problems
    mode_problems: Callable[[Experiment, S], list[Problem]] = no_problems
    load_key: Callable[[Experiment, S], dict[str, Any]] | None = None
    load_key_fields: tuple[str, ...] = ()
    hashed: Callable[[Experiment, dict[str, Any]], dict[str, Any] | None] | None = None
    data_parallel: DataParallel[S] | None = None

    def section_of(self, config: object) -> S:
        """This engine's section of ``config`` (an ``ExperimentConfig``)."""
        section: S = getattr(config, self.name)
        return section

    def selected(self, config: Experiment) -> bool:
        return config.backend == self.name

    def load_key_part(self, config: Experiment) -> dict[str, Any]:
        """This engine's entries of ``config``'s load key."""
        if self.load_key is not None:
            return self.load_key(config, self.section_of(config))
        return {self.name: self.section_of(config)} if self.selected(config) else {}

    def load_key_paths(self) -> tuple[str, ...]:
        """The dotted fields ``load_key_part`` reads."""
        return tuple(f"{self.name}.{f}" for f in self.load_key_fields) or (self.name,)

    def hashed_section(self, config: Experiment, section: dict[str, Any]) -> dict[str, Any] | None:
        """This engine's part of ``config_hash``: ``section`` (its builtins) or less; None
        leaves it out."""
        if self.hashed is not None:
            return self.hashed(config, section)
        return section if self.selected(config) else None

    def entry_point_parts(self) -> tuple[str, str]:
        """(module, class) of ``entry_point``."""
        module, sep, name = self.entry_point.partition(":")
        if not sep or not module or not name:
            raise ValueError(
                f"engine {self.name!r}: entry point {self.entry_point!r} is not module:Class"
            )
        return module, name
