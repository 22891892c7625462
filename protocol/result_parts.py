"""The merge rules of result records and the server-side sub-records of a ``Measurement``
(``lem.protocol.results``, which re-exports every name here): ``Merge``/``SubRecord``, and
``Latency`` (request latency and goodput), ``Observed`` (what was seen on the GPUs besides
their energy) and ``Steady`` (server mode's steady-state part)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar

import msgspec

from lem.protocol.latency import Goodput, LatencySummary, RequestRecord
from lem.protocol.telemetry import TelemetryWindow


class Merge(enum.Enum):
    """How the shards' values of one field become the merged measurement's value."""

    SAME = "same"  # equal on every shard (the experiment, its config); a difference is refused
    FIRST = "first"  # the first shard's: alike on every shard of one host and lem
    FIRST_PRESENT = "first_present"  # the first that is not None: why a figure is missing
    SUM = "sum"  # added; None when any shard's is None (a partial sum would understate)
    MAX = "max"  # the largest that is not None: peaks, host-wide readings every shard made
    MIN = "min"  # the smallest that is not None: the earliest start, the fewest passes
    ALL = "all"  # true only when true on every shard; None when any is None
    CONCAT = "concat"  # per-GPU lists joined in shard order (each GPU is one shard's)
    UNION = "union"  # per-GPU mappings joined
    WHOLE = "whole"  # the field's default: the merged measurement is a whole one
    DERIVED = "derived"  # computed from all shards together (ratios, pooled requests, spans)
    FIELDS = "fields"  # a sub-record: each of its fields by its own rule


Rules = Mapping[str, Merge]


class SubRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A part of a ``Measurement``; ``MERGE`` names the rule of each of its fields."""

    MERGE: ClassVar[Rules] = {}


class Latency(SubRecord, frozen=True, kw_only=True):
    """Request latency (the parent's ``work.workload_mode`` says how requests arrived):
    ``ttft_ms``, ``itl_ms`` (every inter-token gap of every request), ``tpot_ms``,
    ``e2e_ms`` and ``queue_ms`` summarise the per-request table ``requests`` (ms); ``None``
    with ``latency_unavailable_reason`` when token times were not recorded. ``goodput``:
    requests within the config's SLOs. The results store keeps ``requests`` in its own
    table, not in the JSON payload."""

    ttft_ms: LatencySummary | None = None  # time to first token, per request
    itl_ms: LatencySummary | None = None  # inter-token latency, every gap of every request
    tpot_ms: LatencySummary | None = None  # time per output token after the first, per request
    e2e_ms: LatencySummary | None = None  # end-to-end latency, per request
    queue_ms: LatencySummary | None = None  # waiting before a request's work began
    latency_unavailable_reason: str | None = None
    goodput: Goodput | None = None  # None: no SLO set, or no latency
    requests: list[RequestRecord] = []  # one record per request of the window

    # Summaries are not averaged: every shard's requests, on the merged window's clock,
    # are summarised again; none when any shard has no request.
    MERGE: ClassVar[Rules] = {
        "ttft_ms": Merge.DERIVED, "itl_ms": Merge.DERIVED, "tpot_ms": Merge.DERIVED,
        "e2e_ms": Merge.DERIVED, "queue_ms": Merge.DERIVED,
        "latency_unavailable_reason": Merge.DERIVED, "goodput": Merge.DERIVED,
        "requests": Merge.DERIVED,
    }  # fmt: skip


class Observed(SubRecord, frozen=True, kw_only=True):
    """What was seen on the measured GPUs over the window besides their energy."""

    telemetry: TelemetryWindow | None = None  # the sidecar's samples over the window
    telemetry_unavailable_reason: str | None = None
    foreign_processes: str | None = None  # other compute processes seen on our GPUs

    # Each shard's sidecar sampled its own GPUs on one host's monotonic clock.
    MERGE: ClassVar[Rules] = {
        "telemetry": Merge.DERIVED, "telemetry_unavailable_reason": Merge.FIRST_PRESENT,
        "foreign_processes": Merge.DERIVED,
    }  # fmt: skip


class Steady(SubRecord, frozen=True, kw_only=True):
    """The steady-state part of a server-mode window (docs/methodology.md, "Steady-state
    windows in server mode"): edges in s since the window opened, the in-flight level
    (requests), the output tokens of the window's tokens that reached lem between the
    edges and the GPUs' energy between them (``steady_energy_method`` says how it was read,
    ``steady_energy_bound_j`` its worst case). All None with ``steady_unavailable_reason``
    when the run has no steady part (the whole-run figures are then the result) or the
    energy could not be had; all None and no reason in offline mode."""

    steady_window_start_s: float | None = None
    steady_window_end_s: float | None = None
    steady_duration_s: float | None = None
    steady_level: float | None = None  # requests in flight at the steady level
    steady_requests: int | None = None  # requests sent inside the steady window
    steady_output_tokens: int | None = None  # output tokens produced inside it
    steady_energy_j: float | None = None
    steady_energy_per_output_token_j: float | None = None
    steady_energy_method: str | None = None  # sampled_energy_counter, sampled_power
    steady_energy_bound_j: float | None = None
    steady_unavailable_reason: str | None = None

    # Each shard finds its own steady window: the merged one is where all were steady.
    MERGE: ClassVar[Rules] = {
        "steady_window_start_s": Merge.MAX, "steady_window_end_s": Merge.MIN,
        "steady_duration_s": Merge.MIN, "steady_level": Merge.SUM,
        "steady_requests": Merge.SUM, "steady_output_tokens": Merge.SUM,
        "steady_energy_j": Merge.SUM, "steady_energy_per_output_token_j": Merge.DERIVED,
        "steady_energy_method": Merge.FIRST, "steady_energy_bound_j": Merge.SUM,
        "steady_unavailable_reason": Merge.FIRST_PRESENT,
    }  # fmt: skip
