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
        "grid.model.dtype: value 'bf16': expected one of: 'auto', 'bfloat16', 'float16', "
        "'float32', got 'bf16'",
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


CHOICES = {
    "device": (
        "experiment:\n  device: gpu\n",
        "experiment.device: expected one of: 'auto', 'cpu', 'cuda', got 'gpu'",
    ),
    "dtype": (
        "experiment:\n  model: {source: builtin, name: lem-tiny, dtype: BF16}\n",
        "experiment.model.dtype: expected one of: 'auto', 'bfloat16', 'float16', 'float32', "
        "got 'BF16'",  # the value as written, not lower-cased
    ),
    "arrival": (
        "experiment:\n  workload: {mode: server, arrival: burst, rate_per_s: 2}\n",
        "experiment.workload.arrival: expected one of: 'concurrency', 'gamma', 'poisson', "
        "got 'burst'",
    ),
    "mode": (
        "experiment:\n  workload: {mode: online}\n",
        "experiment.workload.mode: expected one of: 'offline', 'server', got 'online'",
    ),
    "order": (  # a field of the campaign file itself
        "order: random\nexperiment: {}\n",
        "order: expected one of: 'grouped', 'interleaved', 'shuffled', got 'random'",
    ),
    "grid_value": (
        "experiment: {}\ngrid: {pytorch.attn_implementation: [sdpa, flash]}\n",
        "grid.pytorch.attn_implementation: value 'flash': expected one of: 'auto', 'eager', "
        "'sdpa', got 'flash'",
    ),
    "wrong_type": (
        "experiment:\n  device: 1\n",
        "experiment.device: expected one of: 'auto', 'cpu', 'cuda', got a value of type 'int'",
    ),
}


@pytest.mark.parametrize("case", sorted(CHOICES))
def test_a_field_of_fixed_choices_lists_them(case: str, tmp_path: Path) -> None:
    """``lem config validate``: exit 2, one line naming the file, the field, the value
    and every value the field takes."""
    text, expected = CHOICES[case]
    path = tmp_path / "campaign.yaml"
    path.write_text("name: c\n" + text)
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"lem: error: {path}: {expected}\n"


def test_choices_are_found_through_unions_lists_and_dicts() -> None:
    from lem.coordinator.planning.campaign import CampaignSchema
    from lem.coordinator.planning.config_loader import field_choices
    from lem.protocol.config import ExperimentConfig

    arrivals = ["concurrency", "gamma", "poisson"]  # Literal[...] | None
    assert field_choices(ExperimentConfig, "workload.arrival") == arrivals
    assert field_choices(CampaignSchema, "experiments.3.model.source") == [
        "builtin", "gguf", "hf", "random"
    ]  # fmt: skip
    assert field_choices(ExperimentConfig, "batch_size") == []
    assert field_choices(ExperimentConfig, "model.nope") == []
