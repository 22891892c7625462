"""The worker's steady-state figures (``lem.workers.workload.steady``): the rule's edges
placed on the sidecar's clock, the sampled counter's energy between them, and its bound."""

from __future__ import annotations

from typing import cast

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.protocol.telemetry import GpuTelemetry, TelemetryWindow
from lem.workers.engines.base import TimedRequest
from lem.workers.metering.telemetry import Sampler
from lem.workers.workload.steady import steady_figures

POWER_W = 700.0
BEGIN_MONOTONIC_S = 1000.0
ORIGIN_S = 50.0  # perf_counter at the window's begin


class FakeSampler:
    """Stands for the sidecar: a constant 700 W, its counter read every 0.1 s."""

    energy_interval_s = 0.1

    def __init__(self, counter: bool) -> None:
        self.counter = counter
        self.asked: list[tuple[float, float]] = []

    def window(self, t_begin_s: float, t_end_s: float) -> TelemetryWindow:
        self.asked.append((t_begin_s, t_end_s))
        energy_j = POWER_W * (t_end_s - t_begin_s)
        gpu = GpuTelemetry(
            gpu_uuid="GPU-0", samples=0, t_s=[], power_w=[], sm_clock_mhz=[],
            mem_clock_mhz=[], temperature_c=[], gpu_util_pct=[], mem_util_pct=[],
            mem_used_mib=[], throttle_reasons=[], integrated_energy_j=1.01 * energy_j,
            counter_energy_j=energy_j if self.counter else None,
        )  # fmt: skip
        return TelemetryWindow(
            t_begin_monotonic_s=t_begin_s, t_end_monotonic_s=t_end_s,
            duration_s=t_end_s - t_begin_s, per_gpu=[gpu],
        )  # fmt: skip


def config(arrival: str = "poisson") -> ExperimentConfig:
    workload = {"mode": "server", "arrival": arrival, "rate_per_s": 10.0, "num_requests": 600}
    raw = {"name": "x", "model": {"source": "builtin", "name": "lem-tiny"}, "workload": workload}
    return msgspec.convert(raw, ExperimentConfig)


def ramp() -> list[TimedRequest]:
    """A request every 0.1 s for 60 s, each 1 s long with 10 tokens (one every 0.1 s)."""
    return [
        TimedRequest(
            pass_index=0, batch_index=None, input_tokens=8, start_s=ORIGIN_S + 0.1 * i,
            token_times_s=[ORIGIN_S + 0.1 * i + 0.1 * (k + 1) for k in range(10)],
            queued_s=0.0, scheduled_s=ORIGIN_S + 0.1 * i,
        )
        for i in range(600)
    ]  # fmt: skip


def test_steady_energy_is_the_sampled_counter_between_the_edges_with_its_bound() -> None:
    sampler = FakeSampler(counter=True)
    steady = steady_figures(
        config(), ramp(), ORIGIN_S, 61.0, False, cast(Sampler, sampler), BEGIN_MONOTONIC_S,
        0.1, None,
    )  # fmt: skip
    start_s, end_s = steady.steady_window_start_s, steady.steady_window_end_s
    assert start_s is not None and end_s is not None and steady.steady_level == 10
    assert end_s == pytest.approx(59.9, abs=0.02)  # the last send
    assert sampler.asked == [(BEGIN_MONOTONIC_S + start_s, BEGIN_MONOTONIC_S + end_s)]
    assert steady.steady_energy_j == pytest.approx(POWER_W * (end_s - start_s))
    assert steady.steady_energy_method == "sampled_energy_counter"
    assert steady.steady_energy_bound_j == pytest.approx(2 * (0.1 + 0.1) * POWER_W)
    tokens = sum(1 for r in ramp() for t in r.token_times_s if start_s <= t - ORIGIN_S <= end_s)
    assert steady.steady_output_tokens == tokens
    assert steady.steady_energy_per_output_token_j == pytest.approx(
        POWER_W * (end_s - start_s) / tokens
    )
    assert steady.steady_unavailable_reason is None


def test_power_samples_stand_in_without_a_bound_and_cpu_runs_keep_edges_only() -> None:
    power = steady_figures(
        config(), ramp(), ORIGIN_S, 61.0, False, cast(Sampler, FakeSampler(counter=False)),
        BEGIN_MONOTONIC_S, 0.1, None,
    )  # fmt: skip
    assert power.steady_energy_method == "sampled_power" and power.steady_energy_bound_j is None
    cpu = steady_figures(config(), ramp(), ORIGIN_S, 61.0, False, None, None, None, "on CPU")
    assert cpu.steady_window_start_s is not None and cpu.steady_energy_j is None
    assert cpu.steady_unavailable_reason == "on CPU"


def test_a_short_metered_run_falls_back_and_offline_has_no_steady_record() -> None:
    short = steady_figures(
        config(), ramp()[:200], ORIGIN_S, 21.0, False, cast(Sampler, FakeSampler(True)),
        BEGIN_MONOTONIC_S, 0.1, None,
    )  # fmt: skip  # ~19 s steady, 40 s needed for a 1% bound
    assert short.steady_window_start_s is None and short.steady_level == 10
    assert "shorter than its energy bound needs" in (short.steady_unavailable_reason or "")
    offline = msgspec.structs.replace(
        config(), workload=msgspec.convert({}, type(config().workload))
    )
    assert steady_figures(offline, ramp(), ORIGIN_S, 61.0, False, None, None, None, None) == (
        type(short)()
    )
