"""Bad configs exit 2 with one line naming file, field and problem; nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.planning.config_loader import ConfigError

BASE = "name: c\nexperiment:\n  model: {source: builtin, name: lem-tiny}\n"

CASES = {
    "unknown_key": (BASE + "  batchsize: 4\n", "experiment.batchsize: unknown field"),
    "wrong_type": (
        BASE + "  batch_size: four\n",
        "experiment.batch_size: expected 'int', got 'str'",
    ),
    "impossible": (BASE + "  output_tokens: 0\n", "experiment.output_tokens: must be >= 1, got 0"),
    "bad_grid_axis": (
        BASE + "grid: {batch_sizes: [1, 2]}\n",
        "grid.batch_sizes: 'batch_sizes' is not a field",
    ),
    "bad_grid_value": (
        BASE + "grid: {batch_size: [1, -2]}\n",
        "grid.batch_size: value -2: must be >= 1",
    ),
    "bad_nested_value": (
        BASE + "grid: {model.dtype: [bf16]}\n",
        "grid.model.dtype: value 'bf16': invalid enum value 'bf16'",
    ),
    "unknown_top": (BASE + "cylces: 3\n", "cylces: unknown top-level field"),
    "missing_path": (
        "name: c\nexperiment: {model: {source: hf}}\n",
        "experiment.model.path: is required when model.source is 'hf'",
    ),
    "not_yaml": ("name: [unclosed\n", "invalid YAML at line"),
    "not_mapping": ("- 1\n- 2\n", "the top level must be a mapping, not list"),
    "zero_cycles": (BASE + "cycles: 0\n", "cycles: must be >= 1, got 0"),
    "cuda_without_gpu": (
        "name: c\nexperiment: {device: cuda, model: {source: builtin, name: lem-tiny}}\n",
        "device: needs 1 GPU(s) but",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_message(case: str, tmp_path: Path) -> None:
    text, expected = CASES[case]
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    if case == "cuda_without_gpu":
        pytest.importorskip("pynvml")
        from lem.protocol.devices.nvml import inventory

        if inventory().gpus:
            pytest.skip("this machine has a GPU")
        from lem.coordinator.planning.dispatch_plan import assign_all

        with pytest.raises(ConfigError) as info:
            assign_all(plan_campaign(path), None)
    else:
        with pytest.raises(ConfigError) as info:
            plan_campaign(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_alias_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    lines = ["a: &a [1]"] + [f"k{i}: *a" for i in range(100)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match="YAML aliases; the limit is"):
        plan_campaign(path)


@pytest.mark.parametrize("case", ["unknown_key", "bad_grid_value", "not_yaml"])
def test_cli_exits_2_with_one_line_and_no_store(case: str, tmp_path: Path) -> None:
    text, expected = CASES[case]
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    store = tmp_path / "store" / "lem.db"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(path), "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not store.exists() and not store.parent.exists()


def test_missing_file_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "nope.yaml: cannot read file" in done.stderr
