"""Composing a Measurement: energy window, quantisation bound, flags and nulls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lem.protocol.config import ExperimentConfig
from lem.protocol.messages import Run
from lem.protocol.results import Measurement
from lem.workers.engines.base import DeviceReport, GenerationStats, MeasurementWindow, PhaseCallback
from lem.workers.workload.measure import CPU_RUN_REASON, MeasurementContext, measure
from lem.workers.workload.side_energy import NO_GPU_REASON, REUSED_REASON
from tests.test_energy_window import ScriptedCounters
from tests.test_protocol import ENV

PROMPT_SET_HASH = "5c2550af29a38cd256a8048fb00ef7b680038d603b8fbc7c3ce096d92e341637"


class FixedBackend:
    """Calls the window edges like a real backend and reports a fixed window."""

    name = "fixed"

    def __init__(
        self,
        duration_s: float,
        device: str = "cuda",
        during: Callable[[], None] | None = None,
        loads: bool | None = None,
    ) -> None:
        self.duration_s = duration_s
        self.device = device
        self.during = during
        # True: loads the model, False: reuses it, both reading the load window as
        # run_scenario does; None: a reused model and a load window never read
        self.loads = loads
        self.min_window_s: float | None = None

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        return DeviceReport(self.device, expected_gpu_uuids, None, None, {})

    def run(
        self,
        config: ExperimentConfig,
        window: MeasurementWindow,
        cancel: threading.Event,
        on_phase: PhaseCallback,
        min_window_s: float = 0.0,
        prefill_window: MeasurementWindow | None = None,
        load_window: MeasurementWindow | None = None,
    ) -> GenerationStats:
        self.min_window_s = min_window_s
        if self.loads is not None and load_window is not None:  # as in run_scenario
            load_window.begin()
            if self.loads:
                load_window.end()
        window.begin()
        if self.during is not None:
            self.during()
        window.end()
        if prefill_window is not None:
            prefill_window.begin()
            prefill_window.end()
        return GenerationStats(
            duration_s=self.duration_s, repetitions=1, batches=1, num_prompts=4, input_tokens=64,
            output_tokens=1000, warmup_batches=0, peak_gpu_memory_load_mib=1.0,
            peak_gpu_memory_inference_mib=2.0, gpu_memory_unavailable_reason=None,
            model_load_s=0.0, model_reused=not self.loads, model_load_count=1, device=self.device,
            prefill_duration_s=self.duration_s / 4 if prefill_window else None,
            prefill_repetitions=2 if prefill_window else 0,
            prompt_set_hash=PROMPT_SET_HASH, prompt_source="synthetic seed 0",
            resolved_dtype="bfloat16",
        )  # fmt: skip

    def close(self) -> None:
        pass


def _measure(
    duration_s: float,
    energy_mj: int,
    period_s: float | None,
    device: str = "cuda",
    config: ExperimentConfig | None = None,
) -> Measurement:
    counters = ScriptedCounters([{"A": 0}, {"A": energy_mj}])
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(duration_s, device), environment=ENV,
        counters=counters, gpu_uuids=["A"], energy_unavailable_reason=None,
        counter_period_s=period_s,
    )  # fmt: skip
    run = Run(experiment_id="e", cycle=0, config=config or ExperimentConfig())
    return measure(run, context, threading.Event(), lambda phase, detail="": None)


def test_long_window_has_a_small_bound_and_no_flag() -> None:
    m = _measure(duration_s=40.0, energy_mj=12_000_000, period_s=0.1)  # 12 kJ at 300 W
    assert m.energy.energy_j == pytest.approx(12_000.0)
    assert m.energy.avg_power_w == pytest.approx(300.0)
    assert m.energy.energy_per_output_token_j == pytest.approx(12.0)
    assert m.energy.energy_bound_j == pytest.approx(2 * 0.1 * 300.0)
    assert m.flags == []
    assert m.energy.energy_per_request_j == pytest.approx(12_000.0 / m.work.num_prompts)
    assert m.energy.output_tokens_per_j == pytest.approx(m.work.output_tokens / 12_000.0)


def test_no_energy_means_no_efficiency_figures() -> None:
    cpu = _measure(duration_s=40.0, energy_mj=0, period_s=0.1, device="cpu")
    assert cpu.energy.energy_j is None and cpu.energy.energy_unavailable_reason
    assert cpu.energy.output_tokens_per_j is None and cpu.energy.energy_per_request_j is None
    zero = _measure(duration_s=40.0, energy_mj=0, period_s=0.1)  # a counter that never moved
    assert zero.energy.energy_j == 0.0 and zero.energy.output_tokens_per_j is None  # not infinity


def test_the_prompt_set_hash_and_source_reach_the_measurement() -> None:
    m = _measure(duration_s=40.0, energy_mj=12_000_000, period_s=0.1)
    assert m.work.prompt_set_hash == PROMPT_SET_HASH
    assert m.work.prompt_source == "synthetic seed 0"


def test_the_dtype_that_ran_reaches_the_measurement() -> None:
    m = _measure(duration_s=40.0, energy_mj=12_000_000, period_s=0.1)
    assert m.preparation.resolved_dtype == "bfloat16"


def _measure_load(
    loads: bool,
    readings: list[dict[str, int | str]],
    gpu_uuids: tuple[str, ...] = ("A",),
    device: str = "cuda",
) -> Measurement:
    """A cycle whose backend loads the model (``loads``) or reuses it, with these counter
    readings in order (the load's two edges when it loads, its first when it reuses, then
    the window's two); no counters at all without GPUs."""
    counters = ScriptedCounters(readings) if gpu_uuids else None
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0, device, loads=loads), environment=ENV,
        counters=counters, gpu_uuids=list(gpu_uuids),
        energy_unavailable_reason=None if gpu_uuids else "no GPU", counter_period_s=0.1,
    )  # fmt: skip
    config = ExperimentConfig(device="cpu" if device == "cpu" else "auto")
    run = Run(experiment_id="e", cycle=0, config=config)
    measured = measure(run, context, threading.Event(), lambda phase, detail="": None)
    assert counters is None or counters.readings == []  # every reading was taken
    return measured


def test_a_load_has_the_counter_delta_over_it_apart_from_the_window() -> None:
    m = _measure_load(True, [{"A": 1_000}, {"A": 351_500}, {"A": 400_000}, {"A": 12_400_000}])
    assert m.preparation.model_reused is False
    assert m.preparation.load_energy_j == pytest.approx(350.5)
    assert m.preparation.load_energy_unavailable_reason is None
    assert m.energy.energy_j == pytest.approx(12_000.0)  # the load is not in the window


def test_a_reused_model_has_no_load_energy_and_says_why() -> None:
    m = _measure_load(False, [{"A": 1_000}, {"A": 400_000}, {"A": 12_400_000}])
    assert m.preparation.model_reused is True and m.preparation.load_energy_j is None
    assert m.preparation.load_energy_unavailable_reason == REUSED_REASON


def test_a_load_whose_counter_failed_has_the_counters_reason() -> None:
    failed = "NVML: GPU is lost"
    m = _measure_load(True, [{"A": 1_000}, {"A": failed}, {"A": 0}, {"A": 12_000_000}])
    assert m.preparation.load_energy_j is None
    assert m.preparation.load_energy_unavailable_reason == failed


@pytest.mark.parametrize(
    ("gpu_uuids", "device", "reason"),
    [((), "cpu", NO_GPU_REASON), (("A",), "cpu", CPU_RUN_REASON)],
)
def test_a_load_on_cpu_is_null_with_a_reason_never_zero(
    gpu_uuids: tuple[str, ...], device: str, reason: str
) -> None:
    m = _measure_load(True, [{"A": 0}, {"A": 12_000_000}], gpu_uuids, device)
    assert m.preparation.model_reused is False
    assert m.preparation.load_energy_j is None
    assert m.preparation.load_energy_unavailable_reason == reason


def test_short_window_is_flagged() -> None:
    m = _measure(duration_s=1.5, energy_mj=250_000, period_s=0.1)
    assert m.energy.energy_bound_j is not None and m.energy.energy_bound_j / 250.0 > 0.01
    assert m.flags == ["short_window"]


def test_unknown_period_has_no_bound_and_says_so() -> None:
    m = _measure(duration_s=40.0, energy_mj=12_000_000, period_s=None)
    assert m.energy.energy_bound_j is None and "counter_period_unknown" in m.flags


def test_cpu_run_on_a_gpu_worker_is_null_with_reason() -> None:
    m = _measure(duration_s=2.0, energy_mj=100_000, period_s=0.1, device="cpu")
    assert m.energy.energy_j is None and m.energy.energy_unavailable_reason == CPU_RUN_REASON
    assert m.energy.energy_bound_j is None and m.flags == []
    assert m.energy.gpu_energy[0].energy_j is None


def test_window_length_aims_at_a_half_percent_bound_unless_configured() -> None:
    assert _measure(40.0, 12_000_000, period_s=0.1).work.min_window_s == pytest.approx(40.0)
    assert _measure(40.0, 12_000_000, period_s=0.05).work.min_window_s == pytest.approx(20.0)
    configured = ExperimentConfig(min_window_s=3.0)
    assert _measure(40.0, 12_000_000, 0.1, config=configured).work.min_window_s == 3.0
    on_cpu = ExperimentConfig(device="cpu")
    assert _measure(2.0, 1, 0.1, device="cpu", config=on_cpu).work.min_window_s == 0.0


class SteadyPower:
    """Idle power readings in W on a fake clock that ``sleep`` advances."""

    def __init__(self, power_w: float) -> None:
        self.power_w = power_w
        self.now_s = 0.0
        self.reads = 0

    def read_power_w(self, uuid: str) -> float | None:
        self.reads += 1
        return self.power_w

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def _with_baseline(
    power: SteadyPower, energy_mj: list[int], config: ExperimentConfig
) -> tuple[list[Measurement], list[str]]:
    from lem.workers.metering.idle_power import BaselineKeeper

    readings: list[dict[str, int | str]] = []
    for mj in energy_mj:
        readings += [{"A": 0}, {"A": mj}]
    keeper = BaselineKeeper(power, ["A"], clock=lambda: power.now_s, sleep=power.sleep,
                            wall_clock=lambda: 1_000.0 + power.now_s)  # fmt: skip
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0), environment=ENV,
        counters=ScriptedCounters(readings), gpu_uuids=["A"], energy_unavailable_reason=None,
        counter_period_s=0.1, baselines=keeper,
    )  # fmt: skip
    phases: list[str] = []
    results = [
        measure(
            Run(experiment_id="e", cycle=i, config=config),
            context,
            threading.Event(),
            lambda phase, detail="": phases.append(phase),
        )
        for i in range(len(energy_mj))
    ]
    return results, phases


def test_net_energy_subtracts_the_idle_baseline_measured_once() -> None:
    power = SteadyPower(75.0)
    (first, second), phases = _with_baseline(power, [12_000_000, 12_000_000], ExperimentConfig())
    assert phases == ["baseline"]  # fresh for the second experiment: not measured again
    assert first.energy.net_energy_j == pytest.approx(12_000.0 - 75.0 * 40.0)
    assert first.energy.net_energy_per_output_token_j == pytest.approx((12_000.0 - 3_000.0) / 1000)
    assert first.energy.gpu_energy[0].idle_power_w == pytest.approx(75.0)
    [record] = first.energy.idle_baselines
    assert record.accepted and record.power_w == pytest.approx(75.0)
    assert record.model_resident is False and record.cv == pytest.approx(0.0)
    assert second.energy.idle_baselines[0].age_s >= 0
    assert second.energy.net_energy_j == first.energy.net_energy_j


def test_net_energy_clamped_at_zero_is_flagged_not_hidden() -> None:
    (m,), _ = _with_baseline(SteadyPower(400.0), [12_000_000], ExperimentConfig())
    assert m.energy.net_energy_j == 0.0 and "net_energy_clamped" in m.flags


def test_disabled_baseline_gives_null_net_with_reason() -> None:
    from lem.protocol.config import IdleBaselineConfig

    config = ExperimentConfig(idle_baseline=IdleBaselineConfig(enabled=False))
    (m,), phases = _with_baseline(SteadyPower(75.0), [12_000_000], config)
    e = m.energy
    assert phases == [] and e.net_energy_j is None and e.energy_j == pytest.approx(12_000.0)
    assert "disabled" in (e.net_energy_unavailable_reason or "") and e.idle_baselines == []


class Processes:
    def __init__(self, pids: set[int]) -> None:
        self.pids = pids

    def compute_pids(self, uuid: str) -> set[int] | str:
        return self.pids


def _contaminated_context(pids: set[int]) -> MeasurementContext:
    return MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0), environment=ENV,
        counters=ScriptedCounters([{"A": 0}, {"A": 12_000_000}]), gpu_uuids=["A"],
        energy_unavailable_reason=None, counter_period_s=0.1, processes=Processes(pids),
    )  # fmt: skip


def test_foreign_process_flags_or_aborts() -> None:
    import os

    from lem.workers.engines.base import BackendError

    run = Run(experiment_id="e", cycle=0, config=ExperimentConfig())
    clean = measure(run, _contaminated_context({os.getpid()}), threading.Event(), lambda *a: None)
    assert "contaminated" not in clean.flags and clean.observed.foreign_processes is None
    dirty = measure(
        run, _contaminated_context({os.getpid(), 4242}), threading.Event(), lambda *a: None
    )
    assert "contaminated" in dirty.flags and dirty.observed.foreign_processes == "A: PIDs [4242]"
    assert dirty.energy.energy_j == pytest.approx(12_000.0)  # still reported, but flagged
    strict = Run(experiment_id="e", cycle=1, config=ExperimentConfig(contamination_policy="abort"))
    with pytest.raises(BackendError, match="PIDs \\[4242\\]"):
        measure(
            strict, _contaminated_context({os.getpid(), 4242}), threading.Event(), lambda *a: None
        )


def test_mig_gpu_is_flagged_as_parent_energy() -> None:
    import msgspec

    from lem.protocol.results import GpuInfo

    env = msgspec.structs.replace(
        ENV, gpus=[GpuInfo(index=0, uuid="A", name="H100", mig_mode_enabled=True)]
    )
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0), environment=env,
        counters=ScriptedCounters([{"A": 0}, {"A": 12_000_000}]), gpu_uuids=["A"],
        energy_unavailable_reason=None, counter_period_s=0.1,
    )  # fmt: skip
    run = Run(experiment_id="e", cycle=0, config=ExperimentConfig())
    assert "mig_parent_energy" in measure(run, context, threading.Event(), lambda *a: None).flags


def test_carbon_needs_a_configured_intensity() -> None:
    m = _measure(40.0, 36_000_000, period_s=0.1)  # 36 kJ = 0.01 kWh
    assert m.energy.carbon_g is None and "not set" in (m.energy.carbon_unavailable_reason or "")
    config = ExperimentConfig(grid_intensity_g_per_kwh=400.0)
    assert _measure(40.0, 36_000_000, 0.1, config=config).energy.carbon_g == pytest.approx(4.0)


def test_cpu_and_dram_energy_from_rapl_over_the_same_window(tmp_path: Path) -> None:
    from lem.protocol.devices.rapl import discover_rapl_zones
    from tests.test_rapl import make_zone, set_uj

    root = tmp_path / "powercap"
    root.mkdir()
    package = make_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    dram = make_zone(package, "intel-rapl:0:0", "dram", 5_000_000)

    def work() -> None:
        set_uj(package, 1_000_000 + 3_000_000_000)  # 3 kJ
        set_uj(dram, 5_000_000 + 400_000_000)  # 400 J

    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0, during=work), environment=ENV,
        counters=ScriptedCounters([{"A": 0}, {"A": 12_000_000}]), gpu_uuids=["A"],
        energy_unavailable_reason=None, counter_period_s=0.1, rapl=discover_rapl_zones(root),
    )  # fmt: skip
    m = measure(Run(experiment_id="e", cycle=0, config=ExperimentConfig()), context,
                threading.Event(), lambda *a: None)  # fmt: skip
    host = m.host_energy
    assert host.cpu_energy_j == pytest.approx(3_000.0)
    assert host.dram_energy_j == pytest.approx(400.0)
    absent = _measure(40.0, 12_000_000, 0.1).host_energy
    assert absent.cpu_energy_j is None and absent.cpu_energy_unavailable_reason


def test_cooldown_that_times_out_is_flagged_and_start_temperature_kept() -> None:
    from lem.protocol.config import CooldownConfig
    from tests.test_cooldown import CoolingGpu

    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0), environment=ENV,
        counters=ScriptedCounters([{"A": 0}, {"A": 12_000_000}]), gpu_uuids=["A"],
        energy_unavailable_reason=None, counter_period_s=0.1, thermal=CoolingGpu(90),
    )  # fmt: skip
    config = ExperimentConfig(cooldown=CooldownConfig(max_temperature_c=40, max_wait_s=0))
    m = measure(Run(experiment_id="e", cycle=0, config=config), context, threading.Event(),
                lambda *a: None)  # fmt: skip
    assert "cooldown_timeout" in m.flags and m.preparation.start_temperature_c == {"A": 90}


def test_prefill_window_splits_energy_into_prefill_and_decode() -> None:
    counters = ScriptedCounters([{"A": 0}, {"A": 12_000_000}, {"A": 0}, {"A": 1_000_000}])
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(40.0), environment=ENV, counters=counters,
        gpu_uuids=["A"], energy_unavailable_reason=None, counter_period_s=0.1,
    )  # fmt: skip
    run = Run(experiment_id="e", cycle=0, config=ExperimentConfig(measure_prefill=True))
    m = measure(run, context, threading.Event(), lambda *a: None)
    # full window: 1 pass, 12 kJ; prefill-only: 2 passes, 1 kJ → 500 J a pass
    assert m.phases.prefill_energy_j == pytest.approx(1000.0) and m.phases.prefill_repetitions == 2
    assert m.phases.decode_energy_j == pytest.approx(11_500.0)
    assert m.phases.decode_energy_per_output_token_j == pytest.approx(11_500.0 / (1000 - 4))
    assert m.phases.phase_split_unavailable_reason is None
    plain = _measure(40.0, 12_000_000, 0.1)
    assert plain.phases.decode_energy_j is None and "measure_prefill" in (
        plain.phases.phase_split_unavailable_reason or ""
    )


def test_a_prefill_window_under_two_counter_updates_has_no_energy_and_no_decode_split() -> None:
    """The counter moved 1 kJ, but over a prefill window of 0.1 s at a 0.1 s counter period
    that difference is no measurement: null with the reason, and decode is not the rest."""
    counters = ScriptedCounters([{"A": 0}, {"A": 12_000_000}, {"A": 0}, {"A": 1_000_000}])
    context = MeasurementContext(
        worker_id="w", backend=FixedBackend(0.4), environment=ENV, counters=counters,
        gpu_uuids=["A"], energy_unavailable_reason=None, counter_period_s=0.1,
    )  # fmt: skip
    run = Run(experiment_id="e", cycle=0, config=ExperimentConfig(measure_prefill=True))
    m = measure(run, context, threading.Event(), lambda *a: None)
    assert m.phases.prefill_duration_s == pytest.approx(0.1)
    assert m.phases.prefill_energy_j is None and m.phases.decode_energy_j is None
    assert "shorter than two updates" in (m.phases.phase_split_unavailable_reason or "")
