"""Messages between the coordinator and workers.

Two tagged unions: ``Command`` (coordinator → worker) and ``Event`` (worker →
coordinator). All structs are frozen; the tag is the ``type`` field. The handshake is:
worker sends ``Hello`` → coordinator answers ``Accept`` (or ``Refuse`` and the worker
exits) → worker initialises its backend and sends ``Ready``. Both sides send
``Heartbeat`` every ``heartbeat_interval_s``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from lem.protocol.config import ExperimentConfig
from lem.protocol.results import Environment, GpuInfo, Measurement

# 2: data-parallel shards (Run's shard fields, the Go command); 3: Measurement of sub-records
PROTOCOL_VERSION = 3
Phase = Literal["baseline", "loading", "warmup", "armed", "measuring"]


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


# ---- commands: coordinator → worker ---------------------------------------------------


class Accept(_Message, tag="accept", frozen=True):
    """The coordinator accepts a worker's hello. Intervals in seconds."""

    heartbeat_interval_s: float
    coordinator_timeout_s: float


class Refuse(_Message, tag="refuse", frozen=True):
    """The coordinator refuses a worker (e.g. protocol version mismatch); it must exit."""

    reason: str


class Run(_Message, tag="run", frozen=True):
    """Run one measurement cycle of one experiment.

    A data-parallel experiment sends one ``Run`` per GPU worker: shard ``shard_index`` of
    ``shard_count`` of the attempt ``shard_group``, each ``config`` holding that shard's
    prompts. With ``start_barrier``
    the worker, once warmed up, reports phase ``armed`` and opens its measured window only
    when ``Go`` arrives, so that all shards measure the same span of time.
    """

    experiment_id: str
    cycle: int
    config: ExperimentConfig
    start_barrier: bool = False
    shard_index: int = 0
    shard_count: int = 1
    shard_group: str = ""  # the same for the shards of one attempt, unique across attempts


class Go(_Message, tag="go", frozen=True):
    """Open the measured window of an armed experiment (see ``Run.start_barrier``)."""

    experiment_id: str


class Cancel(_Message, tag="cancel", frozen=True):
    """Abort the running experiment at the next batch boundary."""

    experiment_id: str


class Shutdown(_Message, tag="shutdown", frozen=True):
    """Release the model and exit cleanly."""

    reason: str = "campaign finished"


class CoordinatorHeartbeat(_Message, tag="coordinator_heartbeat", frozen=True):
    sent_at_unix_s: float


class Ping(_Message, tag="ping", frozen=True):
    """Echo request for round-trip measurements; the worker answers ``Pong`` at once."""

    seq: int
    payload: bytes = b""


Command = Accept | Refuse | Run | Go | Cancel | Shutdown | CoordinatorHeartbeat | Ping


# ---- events: worker → coordinator -----------------------------------------------------


class Hello(_Message, tag="hello", frozen=True):
    """First message of every worker, sent before any backend library is imported."""

    protocol_version: int
    worker_id: str
    pid: int
    backend: str
    python_executable: str
    python_version: str
    lem_version: str
    packages: dict[str, str]
    visible_gpus: list[GpuInfo]
    cuda_visible_devices: str | None


class Ready(_Message, tag="ready", frozen=True):
    """The backend is initialised and the worker verified the GPUs it was given."""

    worker_id: str
    environment: Environment
    init_duration_s: float


class Heartbeat(_Message, tag="heartbeat", frozen=True):
    worker_id: str
    sent_at_unix_s: float
    busy_experiment_id: str | None = None


class Progress(_Message, tag="progress", frozen=True):
    """Phase change of the running experiment (``baseline``, ``loading``, ``warmup``,
    ``armed`` — waiting at a start barrier for ``Go`` — and ``measuring``)."""

    worker_id: str
    experiment_id: str
    phase: Phase
    detail: str = ""


class Result(_Message, tag="result", frozen=True):
    """A finished measurement; already journalled durably by the worker when sent."""

    worker_id: str
    measurement: Measurement


class Error(_Message, tag="error", frozen=True):
    """A failure. ``fatal`` means the worker exits right after sending it."""

    worker_id: str
    experiment_id: str | None
    kind: str
    message: str
    traceback: str = ""
    fatal: bool = False
    retryable: bool = False  # a fresh attempt may succeed (a server that did not start)


class Pong(_Message, tag="pong", frozen=True):
    seq: int
    payload: bytes = b""


Event = Hello | Ready | Heartbeat | Progress | Result | Error | Pong
