"""Environment facts every result carries: host facts parsed from real-format /proc and
/etc text, the GPU clock settings NVML reports (replayed), and the store's schema version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lem.protocol.devices.nvml import inventory
from lem.protocol.devices.nvml_replay import H100_CLOCKS_MHZ, write_steady_trace
from lem.workers.runtime.host_facts import cpu_model, host_facts, memory_total_mib, os_release

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9554 64-Core Processor
cpu MHz\t\t: 3100.000

processor\t: 1
model name\t: AMD EPYC 9554 64-Core Processor
"""
MEMINFO = "MemTotal:       263842928 kB\nMemFree:        250000000 kB\n"
OS_RELEASE = 'NAME="Ubuntu"\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n'


def test_host_facts_are_parsed_from_the_real_formats() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 9554 64-Core Processor"
    assert memory_total_mib(MEMINFO) == pytest.approx(263842928 / 1024)
    assert os_release(OS_RELEASE).endswith("(Ubuntu 24.04.1 LTS)")
    assert cpu_model("") is None and memory_total_mib("MemTotal: lots\n") is None
    assert "(" not in os_release("")  # no distribution named: none made up


def test_host_facts_of_this_machine_are_read_or_none() -> None:
    facts = host_facts()
    assert facts["cpu_count"] is not None and facts["cpu_count"] >= 1
    assert facts["memory_total_mib"] is None or facts["memory_total_mib"] > 100
    assert str(facts["os_release"]).split()[0] in ("Linux", "Darwin")


def test_gpu_clock_settings_come_from_nvml_and_are_none_where_it_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = write_steady_trace(tmp_path / "t.jsonl", ("GPU-clk-0",), "clock settings")
    monkeypatch.setenv("LEM_NVML_REPLAY", str(trace))
    [gpu] = inventory().gpus
    assert (gpu.app_sm_clock_mhz, gpu.max_mem_clock_mhz) == (
        H100_CLOCKS_MHZ["app_sm_clock_mhz"],
        H100_CLOCKS_MHZ["max_mem_clock_mhz"],
    )
    lines = trace.read_text().splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    for row in rows:
        for key in H100_CLOCKS_MHZ:
            del row[key]
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join([lines[0], *(json.dumps(r) for r in rows)]) + "\n")
    monkeypatch.setenv("LEM_NVML_REPLAY", str(bare))
    [gpu] = inventory().gpus
    assert gpu.app_sm_clock_mhz is None and gpu.max_sm_clock_mhz is None


def test_the_store_stamps_each_result_with_its_schema_version(tmp_path: Path) -> None:
    import msgspec

    from lem.coordinator.store.results_store import Store
    from lem.coordinator.store.schema import SCHEMA_VERSION
    from tests.test_data_parallel import dp_config, shard

    store = Store(tmp_path / "lem.db")
    campaign_id = store.create_campaign("c", "c.yaml", "h", 1, experiment_count=1)
    experiment_id = store.ensure_experiment(campaign_id, 0, "e1", dp_config(), "k", {})
    m = msgspec.structs.replace(shard(0, 1.0, 2.0, 3.0), experiment_id=experiment_id)
    assert m.store_schema_version is None
    assert store.record_measurement(m)
    [record] = store.experiment_measurements(experiment_id)
    assert record.measurement is not None
    assert record.measurement.store_schema_version == SCHEMA_VERSION
    store.close()


def test_lem_revision_is_the_checkouts_commit_or_none(tmp_path: Path) -> None:
    import subprocess

    from lem.workers.runtime.host_facts import lem_revision

    assert lem_revision(tmp_path) is None  # not a git work tree
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "f.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert lem_revision(tmp_path) == head
    (tmp_path / "f.py").write_text("x = 2\n")
    assert lem_revision(tmp_path) == f"{head}+dirty"
