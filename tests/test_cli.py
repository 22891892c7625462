"""The `lem` command as a user runs it: run, results, doctor, JSON logs, worker failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lem.coordinator.execution.runner import CampaignRunner, RunOptions
from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.store.results_store import Store

EXPERIMENT = """\
name: cli-tiny
device: cpu
model: {source: builtin, name: lem-tiny}
batch_size: 2
num_prompts: 2
input_tokens: 4
output_tokens: 4
"""


def lem(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``lem ARGS`` in a fresh process, as on a 200-column terminal (no column left out)."""
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_run_then_results_list_and_show(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT)
    store = str(tmp_path / "lem.db")
    done = lem("--log-json", "run", str(experiment), "--cycles", "2", "--store", store)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert {"campaign started", "worker ready", "measured"} <= {e["event"] for e in events}
    measured = [e for e in events if e["event"] == "measured"]
    assert len(measured) == 2 and all(e["energy_j"] is None for e in measured)
    assert all(e["energy_reason"] for e in measured)

    listing = lem("results", "list", "--store", store)
    assert listing.returncode == 0
    [row] = [line for line in listing.stdout.splitlines() if "cli-tiny" in line]
    campaign_id = row.split("│")[1].strip()
    assert "finished" in row and "null [1]" in row
    assert "[1] null because:" in listing.stdout

    shown = lem("results", "show", campaign_id, "--store", store)
    assert shown.returncode == 0
    assert "lem-tiny" in shown.stdout and "2 ok, 0 failed" in shown.stdout
    assert "auto→float32" in shown.stdout  # the dtype that ran, not only the config's auto

    missing = lem("results", "show", "c-nope", "--store", store)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "no campaign with id" in missing.stderr


def _unique_prefix(campaign_id: str, others: list[str]) -> str:
    """The shortest prefix of ``campaign_id`` that starts none of ``others``."""
    for end in range(1, len(campaign_id) + 1):
        if not any(other.startswith(campaign_id[:end]) for other in others):
            return campaign_id[:end]
    raise AssertionError(f"{campaign_id} is a prefix of another id")


def test_results_show_takes_an_id_prefix_and_names_an_ambiguous_ones_campaigns(
    tmp_path: Path,
) -> None:
    from tests.synthetic_results import add_campaign, config

    store = tmp_path / "lem.db"
    with Store(store) as writing:
        first, _ = add_campaign(writing, "first-campaign", [config(1)], [[0.5]])
        second, _ = add_campaign(writing, "second-campaign", [config(2)], [[0.4]])
    prefix = _unique_prefix(second, [first])
    assert prefix != second
    shown = lem("results", "show", prefix, "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    assert second in shown.stdout and "second-campaign" in shown.stdout
    assert first not in shown.stdout

    ambiguous = lem("results", "show", "c-", "--store", str(store))
    assert ambiguous.returncode == 2 and ambiguous.stdout == ""
    [line] = ambiguous.stderr.splitlines()
    assert line.startswith("lem: error: ") and "'c-' is ambiguous" in line
    assert first in line and second in line


def test_results_without_a_store_exit_2(tmp_path: Path) -> None:
    done = lem("results", "list", "--store", str(tmp_path / "none.db"))
    assert done.returncode == 2 and "no result store here" in done.stderr
    assert not (tmp_path / "none.db").exists()


def test_a_store_path_too_long_to_name_a_file_is_no_store_exit_2(tmp_path: Path) -> None:
    """Found by the fuzz test: an over-long --store was an OSError (exit 1)."""
    store = str(tmp_path / ("x" * 300))
    for args in (["results", "list"], ["results", "show", "c-1"], ["compare", "a", "b"]):
        done = lem(*args, "--store", store)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "no result store here" in done.stderr


def test_a_campaign_id_that_is_not_utf8_is_one_line_exit_2(tmp_path: Path) -> None:
    """Found by the fuzz test: argv bytes that are not UTF-8 reached SQLite as surrogates
    (a UnicodeEncodeError traceback)."""
    from tests.synthetic_results import add_campaign, config

    db = tmp_path / "lem.db"
    with Store(db) as store:
        add_campaign(store, "a", [config(1)], [[0.5]])
    for args in ([b"results", b"show", b"\x80"], [b"compare", b"\x80", b"\x81"]):
        done = subprocess.run(
            [sys.executable, "-m", "lem.coordinator", *args, b"--store", bytes(db)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("lem: error: ") and "\\udc80" in done.stderr


def test_doctor_tells_what_can_run_here() -> None:
    done = lem("doctor", timeout_s=180)
    assert done.returncode == 0, done.stderr
    assert "pytorch" in done.stdout and "yes" in done.stdout
    assert "NVML" in done.stdout
    assert "tensorrt" in done.stdout and "(experimental)" in done.stdout  # rich may wrap


def test_dry_run_lists_points_and_stores_nothing(tmp_path: Path) -> None:
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: dry\nexperiment: {model: {source: builtin, name: lem-tiny}}\n"
        "grid: {batch_size: [1, 2], output_tokens: [4, 8]}\ncycles: 3\n"
    )
    done = lem("campaign", str(campaign), "--dry-run", "--store", str(tmp_path / "s" / "lem.db"))
    assert done.returncode == 0
    assert "dry: 4 experiment(s) × 3 cycle(s)" in done.stdout
    assert "batch_size=2,output_tokens=8" in done.stdout
    assert not (tmp_path / "s").exists()


def test_failed_experiment_keeps_the_worker_and_the_campaign_going(tmp_path: Path) -> None:
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: mixed\n"
        "experiment: {device: cpu, num_prompts: 1, input_tokens: 4, output_tokens: 4}\n"
        f"grid:\n  model:\n    - {{source: hf, path: {tmp_path / 'no-such-model'}}}\n"
        "    - {source: builtin, name: lem-tiny}\n"
    )
    with Store(tmp_path / "lem.db") as store:
        runner = CampaignRunner(plan_campaign(campaign), store, RunOptions(tmp_path / "lem.db"))
        outcome = runner.run()
        detail = store.campaign_detail(outcome.campaign_id)
        ok = store.experiment_measurements(detail.experiments[1].id)[0].measurement
    [(_, _, reason)] = outcome.failures
    assert "no-such-model" in reason and "BackendError" in reason
    assert ok is not None and ok.worker_id.startswith("w1-")  # the same, first worker
    assert detail.campaign.status == "failed"


def test_worker_given_a_gpu_it_cannot_see_fails_fast(tmp_path: Path) -> None:
    from lem.coordinator.execution.gpus import GpuAssignment
    from lem.coordinator.execution.hub import Hub
    from lem.coordinator.execution.launcher import LocalProcessLauncher, WorkerSpec
    from lem.coordinator.execution.supervisor import Supervisor, WorkerStartError

    hub = Hub()
    supervisor = Supervisor(hub, LocalProcessLauncher())
    spec = WorkerSpec(
        worker_id="w-ghost",
        backend="pytorch",
        endpoint=hub.endpoint,
        assignment=GpuAssignment(("GPU-00000000-0000-0000-0000-000000000000",)),
        journal_path=tmp_path / "j.jsonl",
        log_path=tmp_path / "w.log",
    )
    try:
        try:
            supervisor.start_worker(spec)
        except WorkerStartError as exc:
            message = str(exc)
        else:
            raise AssertionError("a worker that cannot see its GPU must not become ready")
    finally:
        hub.close()
    assert "failed to start: CudaVisibilityError" in message
    assert "GPU-00000000" in message


def test_doctor_on_a_replayed_gpu_reports_the_counter_period() -> None:
    import os

    trace = Path(__file__).parent / "data" / "h100_like_idle_load.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "doctor"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LEM_NVML_REPLAY": str(trace), "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "NVIDIA H100 80GB HBM3" in done.stdout and "updates every 100 ms" in done.stdout
    assert "CPU/DRAM energy (RAPL)" in done.stdout


def test_version_prints_the_installed_distributions_version() -> None:
    from importlib import metadata

    done = lem("--version")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"lem {metadata.version('lem')}\n"


def test_version_without_an_installed_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from click.testing import CliRunner

    from lem.coordinator.cli.main import main

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    done = CliRunner().invoke(main, ["--version"])
    assert done.exit_code == 0 and done.output == "lem 0+unknown\n"
