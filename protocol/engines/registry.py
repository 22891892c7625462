"""The engine registry: every engine lem knows, and each one's config section.

An engine is its module in this folder (section type, checks, ``SPEC``), its worker
package (``lem.workers.engines.<name>``, the ``SPEC``'s entry point) and its environment
lock (``envs/<lock>/``); it is registered here by one entry: its ``SPEC`` in ``ENGINES``
with its section typed in ``EngineSections`` (the two must agree: checked on import).
``docs/architecture.md``, "Adding an engine", walks through it.

Everything that has to know the engines reads them from here: the ``backend`` field's
values and the engine sections of ``ExperimentConfig`` (``lem.protocol.config``), config
checks, the capability table (``lem.protocol.capabilities``), environment resolution and
``lem env``, ``lem doctor``, the worker's probe and its runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from lem.protocol.common_config import CommonConfig
from lem.protocol.engines import openai, pytorch, tensorrt, vllm
from lem.protocol.engines.openai import OpenAiConfig
from lem.protocol.engines.pytorch import PyTorchConfig
from lem.protocol.engines.spec import EngineSpec
from lem.protocol.engines.tensorrt import TensorRtConfig
from lem.protocol.engines.vllm import VllmConfig

# In this order: the first is the default backend; tables and listings follow it.
ENGINES: tuple[EngineSpec[Any], ...] = (pytorch.SPEC, vllm.SPEC, tensorrt.SPEC, openai.SPEC)

ENGINE_NAMES: tuple[str, ...] = tuple(spec.name for spec in ENGINES)
DEFAULT_ENGINE: str = ENGINES[0].name
_BY_NAME: dict[str, EngineSpec[Any]] = {spec.name: spec for spec in ENGINES}

if TYPE_CHECKING:
    BackendName = str
else:  # msgspec needs the values: a Literal of the registered names (the schema's enum)
    BackendName = Literal[ENGINE_NAMES]


class EngineSections(CommonConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``backend`` field (one of ``ENGINE_NAMES``) and one section per engine, named as
    the engine (a layer of ``ExperimentConfig``: see ``lem.protocol.common_config``)."""

    backend: BackendName = DEFAULT_ENGINE
    pytorch: PyTorchConfig = msgspec.field(default_factory=PyTorchConfig)
    vllm: VllmConfig = msgspec.field(default_factory=VllmConfig)
    tensorrt: TensorRtConfig = msgspec.field(default_factory=TensorRtConfig)
    openai: OpenAiConfig = msgspec.field(default_factory=OpenAiConfig)


def engine_named(name: str) -> EngineSpec[Any]:
    """The engine called ``name``; raises ``KeyError`` naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r} (known: {', '.join(sorted(_BY_NAME))})") from None


def find_engine(name: str) -> EngineSpec[Any] | None:
    """The engine called ``name``, or None."""
    return _BY_NAME.get(name)


def engine_of_lock(lock: str) -> EngineSpec[Any] | None:
    """The engine whose environment may be made from the shipped lock ``lock``, or None."""
    return next((spec for spec in ENGINES if lock in spec.environment.locks), None)


def _check() -> None:
    """Each engine's section in ``EngineSections``, under its name and of its type."""
    fields = {f.name: f for f in msgspec.structs.fields(EngineSections)}
    common = {f.name for f in msgspec.structs.fields(CommonConfig)}
    sections = [name for name in fields if name not in common]
    if sections != list(ENGINE_NAMES):
        raise TypeError(f"EngineSections has {sections}, ENGINES {list(ENGINE_NAMES)}")
    for spec in ENGINES:
        if fields[spec.name].type is not spec.section:
            raise TypeError(f"EngineSections.{spec.name} is not {spec.section.__name__}")


_check()
