"""The workload and slo sections of a config: valid YAML, one-line problems naming the dotted
field, and the backend capability table rejecting an unsupported pair before any worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.planning.config_loader import ConfigError
from lem.protocol import capabilities
from lem.protocol.capabilities import ModeSupport, capability_problems
from lem.protocol.config import ExperimentConfig, config_problems
from lem.protocol.workload import SloConfig, WorkloadConfig, timing_enabled


def campaign(tmp_path: Path, experiment: str) -> Path:
    path = tmp_path / "c.yaml"
    device = "" if "  device:" in experiment else "  device: cpu\n"  # no duplicate key
    path.write_text(
        f"name: c\nexperiment:\n{device}  model: {{source: builtin, name: lem-tiny}}\n{experiment}"
    )
    return path


def test_defaults_are_offline_with_token_timing_and_no_slo() -> None:
    config = ExperimentConfig()
    assert config.workload == WorkloadConfig(mode="offline", token_timing=None)
    assert timing_enabled(config.workload)  # the loop clock costs no device work
    assert not timing_enabled(WorkloadConfig(token_timing=False))
    assert not config.slo.is_set
    assert config_problems(config) == []
    server = WorkloadConfig(mode="server", arrival="concurrency", concurrency=2)
    assert timing_enabled(server)  # the engine stamps its tokens anyway
    assert timing_enabled(WorkloadConfig(token_timing=True))


def test_an_slo_needs_token_timing(tmp_path: Path) -> None:
    path = campaign(
        tmp_path, "  workload: {mode: offline, token_timing: false}\n  slo: {ttft_ms: 200}\n"
    )
    with pytest.raises(ConfigError) as info:
        plan_campaign(path)
    assert "experiment.slo: needs token times: workload.token_timing is false" in str(info.value)
    plan_campaign(campaign(tmp_path, "  slo: {ttft_ms: 200}\n"))  # timing on by default
    path = campaign(
        tmp_path, "  workload: {token_timing: true}\n  slo: {ttft_ms: 200, tpot_ms: 50.5}\n"
    )
    [planned] = plan_campaign(path).experiments
    assert planned.config.slo == SloConfig(ttft_ms=200.0, tpot_ms=50.5)
    assert planned.config.workload.mode == "offline"


PROBLEMS = {
    "offline_with_rate": (
        WorkloadConfig(rate_per_s=4.0),
        ("workload.rate_per_s", "is not used when workload.mode is 'offline'"),
    ),
    "offline_with_seed": (
        WorkloadConfig(seed=1),
        ("workload.seed", "is not used when workload.mode is 'offline'"),
    ),
    "server_without_arrival": (
        WorkloadConfig(mode="server"),
        ("workload.arrival", "is required when workload.mode is 'server'"),
    ),
    "poisson_without_rate": (
        WorkloadConfig(mode="server", arrival="poisson"),
        ("workload.rate_per_s", "is required by the 'poisson' arrival"),
    ),
    "poisson_with_burstiness": (
        WorkloadConfig(mode="server", arrival="poisson", rate_per_s=2.0, burstiness=0.5),
        ("workload.burstiness", "is not used by the 'poisson' arrival"),
    ),
    "gamma_without_burstiness": (
        WorkloadConfig(mode="server", arrival="gamma", rate_per_s=2.0),
        ("workload.burstiness", "is required by the 'gamma' arrival"),
    ),
    "negative_rate": (
        WorkloadConfig(mode="server", arrival="gamma", rate_per_s=-1.0, burstiness=0.5),
        ("workload.rate_per_s", "must be a finite number > 0, got -1.0"),
    ),
    "zero_concurrency": (
        WorkloadConfig(mode="server", arrival="concurrency", concurrency=0),
        ("workload.concurrency", "must be a finite number > 0, got 0"),
    ),
    "concurrency_with_rate": (
        WorkloadConfig(mode="server", arrival="concurrency", concurrency=2, rate_per_s=1.0),
        ("workload.rate_per_s", "is not used by the 'concurrency' arrival"),
    ),
    "zero_requests": (
        WorkloadConfig(mode="server", arrival="concurrency", concurrency=2, num_requests=0),
        ("workload.num_requests", "must be >= 1, got 0"),
    ),
    "server_without_timing": (
        WorkloadConfig(mode="server", arrival="concurrency", concurrency=2, token_timing=False),
        ("workload.token_timing", "cannot be false in server mode"),
    ),
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_workload_problems_name_the_field(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the PyTorch worker supports today, these checks are the config's own.
    server = ModeSupport("a test engine")
    monkeypatch.setitem(
        capabilities.BACKEND_MODES, "pytorch", {"offline": server, "server": server}
    )
    workload, (field, problem) = PROBLEMS[case]
    problems = config_problems(ExperimentConfig(workload=workload))
    assert problems, case
    assert problems[0][0] == field and problem in problems[0][1], problems


def test_slo_must_be_positive() -> None:
    timed = WorkloadConfig(token_timing=True)
    slo = SloConfig(ttft_ms=0.0, tpot_ms=float("nan"))
    problems = config_problems(ExperimentConfig(slo=slo, workload=timed))
    assert [p[0] for p in problems] == ["slo.ttft_ms", "slo.tpot_ms"]


def test_capability_table_rejects_a_pair_it_lacks_or_marks_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ExperimentConfig(
        workload=WorkloadConfig(mode="server", arrival="poisson", rate_per_s=1.0)
    )
    monkeypatch.setitem(capabilities.BACKEND_MODES, "pytorch", {"offline": ModeSupport("x")})
    [(field, problem)] = capability_problems(config)
    assert field == "workload.mode"
    assert "backend 'pytorch' does not support mode 'server'" in problem
    limited = ModeSupport(
        "x", max_gpus=1, conflicts=(("pytorch.cache_implementation", "static", "own cache"),)
    )
    monkeypatch.setitem(capabilities.BACKEND_MODES, "pytorch", {"server": limited})
    assert capability_problems(config) == []
    two_gpus_static = ExperimentConfig(
        gpu_count=2,
        workload=config.workload,
        pytorch=msgspec.structs.replace(config.pytorch, cache_implementation="static"),
    )
    problems = capability_problems(two_gpus_static)
    assert problems[0] == (
        "workload.mode",
        "backend 'pytorch' runs mode 'server' on at most 1 GPU(s), got gpu_count 2",
    )
    assert problems[1][0] == "pytorch.cache_implementation" and "own cache" in problems[1][1]


def unsupported_server_config() -> str:
    """A server-mode experiment the PyTorch backend cannot run, per today's table."""
    support = capabilities.mode_support("pytorch", "server")
    assert support is not None
    if support.unsupported_reason is not None:
        return "  workload: {mode: server, arrival: poisson, rate_per_s: 4}\n"
    assert support.max_gpus is not None, "every pytorch mode runs: nothing left to reject"
    return (
        f"  device: auto\n  gpu_count: {support.max_gpus + 1}\n"
        "  workload: {mode: server, arrival: poisson, rate_per_s: 4}\n"
    )


@pytest.mark.parametrize("command", ["campaign", "dry-run"])
def test_unsupported_mode_backend_pair_exits_2_with_one_line(command: str, tmp_path: Path) -> None:
    path = campaign(tmp_path, unsupported_server_config())
    store = tmp_path / "store" / "lem.db"
    args = ["campaign", str(path), "--store", str(store)]
    if command == "dry-run":
        args.append("--dry-run")
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"lem: error: {path}: experiment.workload.mode: backend 'pytorch'")
    assert not store.parent.exists()  # rejected before anything was stored or started
