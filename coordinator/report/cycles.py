"""What the report's sections read from every stored cycle: the few fields of a
``Measurement`` that the flags, method, environment and empty-figure notes use, decoded
from the payload without the rest (telemetry samples, requests, environment), so that
tens of thousands of cycles decode in well under a second.

The structs mirror ``lem.protocol.results.Measurement``'s names and nesting: code that
reads ``m.energy.gpu_energy[0].method`` works on either. A flat payload (a store of
schema ≤ 4) is decoded as a whole ``Measurement`` first, exactly as ``Store`` reads it.
"""

from __future__ import annotations

import msgspec

from lem.protocol.result_payload import decode_measurement


class _GpuEnergy(msgspec.Struct, frozen=True, kw_only=True):
    method: str


class _IdleBaseline(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    accepted: bool


class _Energy(msgspec.Struct, frozen=True, kw_only=True):
    energy_j: float | None = None
    energy_unavailable_reason: str | None = None
    energy_counter_period_s: float | None = None
    energy_bound_j: float | None = None
    gpu_energy: list[_GpuEnergy] = []
    idle_baselines: list[_IdleBaseline] = []


class _Work(msgspec.Struct, frozen=True, kw_only=True):
    duration_s: float
    num_prompts: int = 0
    output_tokens: int = 0
    prompt_source: str | None = None


class _Preparation(msgspec.Struct, frozen=True, kw_only=True):
    warmup_converged: bool | None = None


class _Goodput(msgspec.Struct, frozen=True, kw_only=True):
    good_share: float | None = None
    good_output_tokens_per_s: float = 0.0
    ttft_slo_ms: float | None = None
    tpot_slo_ms: float | None = None


class _Latency(msgspec.Struct, frozen=True, kw_only=True):
    latency_unavailable_reason: str | None = None
    goodput: _Goodput | None = None


class _Steady(msgspec.Struct, frozen=True, kw_only=True):
    steady_energy_per_output_token_j: float | None = None


class _GpuTelemetry(msgspec.Struct, frozen=True, kw_only=True):
    gpu_uuid: str
    samples: int
    sm_clock_start_mhz: int | None = None
    sm_clock_end_mhz: int | None = None


class _Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    per_gpu: list[_GpuTelemetry]


class _Observed(msgspec.Struct, frozen=True, kw_only=True):
    telemetry: _Telemetry | None = None
    telemetry_unavailable_reason: str | None = None


class CycleMeasurement(msgspec.Struct, frozen=True, kw_only=True):
    """The part of one ok cycle's ``Measurement`` the report's sections read."""

    flags: list[str] = []
    work: _Work
    energy: _Energy
    preparation: _Preparation
    latency: _Latency = msgspec.field(default_factory=_Latency)
    observed: _Observed = msgspec.field(default_factory=_Observed)
    steady: _Steady = msgspec.field(default_factory=_Steady)
    store_schema_version: int | None = None

    @property
    def has_samples(self) -> bool:
        """Whether the sidecar kept any sample over the window (a timeline can be drawn)."""
        telemetry = self.observed.telemetry
        return telemetry is not None and any(g.samples for g in telemetry.per_gpu)


_decoder = msgspec.json.Decoder(CycleMeasurement)


def decode_cycle(raw: bytes | str) -> CycleMeasurement:
    """The report's fields of one stored payload, nested or flat."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError:
        whole = decode_measurement(raw)  # flat (schema ≤ 4), or a real error
    return _decoder.decode(msgspec.json.encode(whole))
