"""Campaign progress: the model (done/total, ETA, phase, power), its live display, and what
`lem campaign` prints with --quiet, --log-json, piped and on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import structlog
from rich.console import Console
from structlog.testing import capture_logs

from lem.coordinator.cli.progress import (
    CampaignProgress,
    NvmlPowerReader,
    format_duration,
    live_display,
)
from lem.coordinator.execution.supervisor import WorkerHandle
from lem.coordinator.planning.campaign import PlannedExperiment, plan_campaign
from lem.protocol.messages import Phase, Progress
from tests.recorded import LOAD, UUID, OnReplay


class Clock:
    """A monotonic clock the test moves (s)."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class Power:
    """A fake power reader: returns ``value_w`` and counts its calls."""

    def __init__(self, value_w: float | None) -> None:
        self.value_w = value_w
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, gpu_uuids: tuple[str, ...]) -> float | None:
        self.calls.append(gpu_uuids)
        return self.value_w


def experiments(tiny_campaign: Path) -> list[PlannedExperiment]:
    return list(plan_campaign(tiny_campaign).experiments)  # two: batch_size 1 and 2


def worker(*gpu_uuids: str) -> WorkerHandle:
    spec = SimpleNamespace(assignment=SimpleNamespace(gpu_uuids=gpu_uuids))
    return cast(WorkerHandle, SimpleNamespace(spec=spec, process=SimpleNamespace()))


def event(phase: Phase, detail: str = "") -> Progress:
    return Progress(worker_id="w1", experiment_id="e1", phase=phase, detail=detail)


def test_done_of_total_and_eta_from_the_mean_finished_cycle(tiny_campaign: Path) -> None:
    a, b = experiments(tiny_campaign)
    model = CampaignProgress("tiny", experiments=2, cycles=2)
    assert (model.done_cycles, model.total_cycles) == (0, 4)
    assert model.eta_s() is None and model.eta_text() == "ETA unknown"
    assert model.mean_cycle_s() is None

    model.on_cycle_done(a, 0, True, 10.0)
    assert model.done_cycles == 1 and model.eta_s() == 30.0  # 10 s × 3 left
    assert model.eta_text() == "ETA 0:30"

    model.on_cycle_done(a, 1, False, 20.0)  # failed cycles count as done, their time too
    assert (model.done_cycles, model.failed_cycles) == (2, 1)
    assert model.mean_cycle_s() == 15.0 and model.eta_s() == 30.0

    model.on_cycle_done(b, 0, True, 3600.0)
    assert model.eta_s() == (10.0 + 20.0 + 3600.0) / 3
    assert model.eta_text() == "ETA 20:10"
    model.on_cycle_done(b, 1, True, 1.0)
    assert model.done_cycles == model.total_cycles and model.eta_s() == 0.0


def test_format_duration_rounds_up_and_shows_hours() -> None:
    assert format_duration(0.0) == "0:00"
    assert format_duration(59.2) == "1:00"
    assert format_duration(3 * 3600 + 61) == "3:01:01"


def test_phase_text_names_experiment_cycle_phase_and_detail(tiny_campaign: Path) -> None:
    _, b = experiments(tiny_campaign)
    model = CampaignProgress("tiny", experiments=2, cycles=3)
    assert model.phase_text() == "waiting for the first worker"
    model.on_progress(b, 1, event("warmup", "2 batch(es)"), worker())
    assert model.phase_text() == f"{b.name} · cycle 2/3 · warmup (2 batch(es))"
    model.on_progress(b, 1, event("measuring"), worker())
    assert model.phase_text() == f"{b.name} · cycle 2/3 · measuring"
    model.on_cycle_done(b, 1, False, 1.0)
    assert model.phase_text() == f"{b.name} · cycle 2/3 · failed"


def test_on_a_cluster_the_phase_text_shows_what_each_node_runs(tiny_campaign: Path) -> None:
    a, b = experiments(tiny_campaign)
    model = CampaignProgress("tiny", experiments=2, cycles=3)
    on_one, on_two = worker("GPU-1"), worker("GPU-2")
    on_one.process.node = "gpu-node-1"  # type: ignore[attr-defined]  # as a RayProcess has
    on_two.process.node = "gpu-node-2"  # type: ignore[attr-defined]
    model.on_progress(a, 0, event("measuring"), on_one)
    assert model.phase_text() == f"gpu-node-1: {a.name} · cycle 1/3 · measuring"
    model.on_progress(b, 0, event("warmup"), on_two)
    assert model.phase_text() == (
        f"gpu-node-1: {a.name} · cycle 1 · measuring | gpu-node-2: {b.name} · cycle 1 · warmup"
    )


def test_power_is_na_never_zero_when_unreadable_or_on_cpu(tiny_campaign: Path) -> None:
    a, _ = experiments(tiny_campaign)
    clock = Clock()
    unreadable = Power(None)
    model = CampaignProgress("tiny", 2, 1, clock=clock, power_reader=unreadable)
    assert model.power_text() == "power n/a"  # nothing running yet
    model.on_progress(a, 0, event("measuring"), worker())  # a CPU experiment
    assert model.power_text() == "power n/a" and unreadable.calls == []
    model.on_progress(a, 0, event("measuring"), worker("GPU-a"))
    assert model.power_w() is None and model.power_text() == "power n/a"
    assert unreadable.calls == [("GPU-a",)]

    def broken(gpu_uuids: tuple[str, ...]) -> float | None:
        raise RuntimeError("NVML went away")

    model = CampaignProgress("tiny", 2, 1, clock=clock, power_reader=broken)
    model.on_progress(a, 0, event("measuring"), worker("GPU-a"))
    assert model.power_text() == "power n/a"
    no_reader = CampaignProgress("tiny", 2, 1, clock=clock)
    no_reader.on_progress(a, 0, event("measuring"), worker("GPU-a"))
    assert no_reader.power_text() == "power n/a"


def test_power_is_summed_over_the_gpus_and_read_at_most_twice_a_second(
    tiny_campaign: Path,
) -> None:
    a, _ = experiments(tiny_campaign)
    clock = Clock()
    power = Power(612.4)
    model = CampaignProgress("tiny", 2, 1, clock=clock, power_reader=power)
    model.on_progress(a, 0, event("measuring"), worker("GPU-a", "GPU-b"))
    assert model.power_text() == "power 612 W (2 GPUs)"
    power.value_w = 300.0
    clock.now_s += 0.4
    assert model.power_w() == 612.4 and len(power.calls) == 1  # cached within 0.5 s
    clock.now_s += 0.1
    assert model.power_text() == "power 300 W (2 GPUs)" and len(power.calls) == 2
    assert power.calls[-1] == ("GPU-a", "GPU-b")


def test_nvml_power_reader_reads_a_replayed_gpu_and_says_none_otherwise(
    replay: Callable[..., OnReplay],
) -> None:
    reader = NvmlPowerReader()
    assert reader(()) is None
    on = replay(LOAD)
    on.goto(506.7)
    try:
        assert reader((UUID,)) == on.trace.row_at(506.7)["power_mw"] / 1000.0  # 693 W
        assert reader(("GPU-not-on-this-node",)) is None
    finally:
        reader.close()


def test_nvml_power_reader_without_nvml_says_none() -> None:
    reader = NvmlPowerReader()
    try:
        value = reader(("GPU-00000000-0000-0000-0000-000000000000",))
    finally:
        reader.close()
    assert value is None  # no NVML here, or NVML does not know the GPU


def test_each_finished_cycle_logs_a_progress_event(tiny_campaign: Path) -> None:
    a, _ = experiments(tiny_campaign)
    model = CampaignProgress("tiny", 2, 1)
    with capture_logs() as logs:
        model.on_cycle_done(a, 0, True, 2.5)
    [entry] = logs
    assert entry["event"] == "campaign progress" and entry["log_level"] == "info"
    assert (entry["done"], entry["total"], entry["failed"], entry["eta_s"]) == (1, 2, 0, 2.5)
    assert entry["experiment"] == a.name and entry["ok"] is True
    assert entry["duration_s"] == 2.5


def test_live_display_draws_the_model_and_restores_logging(tiny_campaign: Path) -> None:
    a, _ = experiments(tiny_campaign)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    model = CampaignProgress("tiny", 2, 1, power_reader=Power(412.0))
    factory = structlog.get_config()["logger_factory"]
    with live_display(model, console):
        model.on_progress(a, 0, event("warmup", "1 batch(es)"), worker("GPU-a"))
        model.on_cycle_done(a, 0, True, 4.0)
    assert structlog.get_config()["logger_factory"] is factory and model.listener is None
    last_frame = out.getvalue().rsplit("tiny ", 1)[-1]  # the final frame stays (not transient)
    assert "1/2 cycles" in last_frame and "ETA 0:04" in last_frame
    assert f"{a.name} · cycle 1/1 · measured" in last_frame and "power 412 W" in last_frame


# ---- the real CLI on CPU ---------------------------------------------------------------


def lem_campaign(campaign: Path, store: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lem.coordinator", *flags, "campaign", str(campaign)]
    return subprocess.run(
        [*command, "--store", str(store)], capture_output=True, text=True, timeout=180
    )


BAR = "━"


def test_quiet_prints_no_progress(tiny_campaign: Path, tmp_path: Path) -> None:
    done = lem_campaign(tiny_campaign, tmp_path / "lem.db", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # warnings only, and there were none
    assert "ETA" not in done.stdout and "lem-tiny" in done.stdout  # the result table only


def test_log_json_gives_one_json_event_a_line_with_done_of_total(
    tiny_campaign: Path, tmp_path: Path
) -> None:
    done = lem_campaign(tiny_campaign, tmp_path / "lem.db", "--log-json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    progress = [e for e in events if e["event"] == "campaign progress"]
    assert [(e["done"], e["total"]) for e in progress] == [(1, 2), (2, 2)]
    assert progress[-1]["eta_s"] == 0.0 and all(e["ok"] for e in progress)
    assert {"loading", "warmup", "measuring"} <= {e["event"] for e in events}


def test_piped_output_gets_plain_progress_lines_and_no_live_display(
    tiny_campaign: Path, tmp_path: Path
) -> None:
    done = lem_campaign(tiny_campaign, tmp_path / "lem.db")
    assert done.returncode == 0, done.stderr
    assert BAR not in done.stderr and "ETA" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "campaign progress" in line]
    assert len(lines) == 2 and "done=2" in lines[-1] and "total=2" in lines[-1]
    [written] = (tmp_path / "runs").glob("*/campaign.log")  # and the log file too
    assert written.read_text().count("campaign progress") == 2


def test_a_terminal_gets_the_live_display_on_stderr(tiny_campaign: Path, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    command = [sys.executable, "-m", "lem.coordinator", "campaign", str(tiny_campaign)]
    try:
        done = subprocess.run(
            [*command, "--store", str(tmp_path / "lem.db")],
            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, timeout=180,
            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
        )  # fmt: skip
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert done.returncode == 0, shown
    assert BAR in shown and "2/2 cycles" in shown and "ETA unknown" in shown
    assert "cycle 1/1 · measuring" in shown and "power n/a" in shown  # CPU: no GPU power
    # The display replaces the info lines (loading, warmup, measuring...): they go to the
    # campaign's log file only.
    assert "[info" not in shown and "campaign progress" not in shown
    [written] = (tmp_path / "runs").glob("*/campaign.log")
    assert "loading" in written.read_text() and "campaign progress" in written.read_text()
