"""The prompts section of a config: every source's YAML, and one-line problems naming the
dotted field for fields of another source or impossible length distributions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lem.coordinator.planning.campaign import plan_campaign
from lem.coordinator.planning.config_loader import ConfigError
from lem.protocol.config import ExperimentConfig, LengthDistribution, PromptConfig, config_problems

REPO = Path(__file__).parent.parent


def campaign(tmp_path: Path, prompts: str, extra: str = "") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nexperiment:\n  model: {source: builtin, name: lem-tiny}\n"
        f"  input_tokens: 64\n  output_tokens: 32\n  prompts: {prompts}\n{extra}"
    )
    return path


VALID = {
    "legacy_synthetic": ("{source: synthetic, seed: 3}", PromptConfig(seed=3)),
    "legacy_file": ("{source: file, path: p.txt}", PromptConfig(source="file", path="p.txt")),
    "synthetic_lengths": (
        "{source: synthetic, input_length: {distribution: uniform, min_tokens: 8, "
        "max_tokens: 64}, output_length: {distribution: normal, mean_tokens: 16, "
        "std_tokens: 4.5, max_tokens: 30}}",
        PromptConfig(
            input_length=LengthDistribution(distribution="uniform", min_tokens=8, max_tokens=64),
            output_length=LengthDistribution(
                distribution="normal", mean_tokens=16.0, std_tokens=4.5, max_tokens=30
            ),
        ),
    ),
    "sharegpt_default_file": (
        "{source: sharegpt, output_length: {distribution: reference}}",
        PromptConfig(source="sharegpt", output_length=LengthDistribution(distribution="reference")),
    ),
    "hf_cached_name": (
        "{source: hf, dataset: org/name, config_name: en, split: test, column: question}",
        PromptConfig(
            source="hf", dataset="org/name", config_name="en", split="test", column="question"
        ),
    ),
    "hf_saved_folder": (
        "{source: hf, path: /data/saved}",
        PromptConfig(source="hf", path="/data/saved"),
    ),
}


@pytest.mark.parametrize("case", sorted(VALID))
def test_every_source_reads_from_yaml(case: str, tmp_path: Path) -> None:
    text, expected = VALID[case]
    [point] = plan_campaign(campaign(tmp_path, text)).experiments
    assert point.config.prompts == expected


BAD = {
    "path_for_synthetic": (
        "{source: synthetic, path: p.txt}",
        "experiment.prompts.path: is not used when prompts.source is 'synthetic'",
    ),
    "dataset_for_sharegpt": (
        "{source: sharegpt, dataset: org/name}",
        "experiment.prompts.dataset: is not used when prompts.source is 'sharegpt'",
    ),
    "input_length_for_file": (
        "{source: file, path: p.txt, input_length: {distribution: uniform, min_tokens: 2}}",
        "experiment.prompts.input_length: is not used when prompts.source is 'file'",
    ),
    "file_without_path": ("{source: file}", "experiment.prompts.path: is required"),
    "hf_without_dataset": (
        "{source: hf, split: train}",
        "experiment.prompts.dataset: hf prompts need exactly one of",
    ),
    "hf_with_both": (
        "{source: hf, dataset: a/b, path: /x}",
        "experiment.prompts.dataset: hf prompts need exactly one of",
    ),
    "min_above_max": (
        "{input_length: {distribution: uniform, min_tokens: 50, max_tokens: 10}}",
        "experiment.prompts.input_length.min_tokens: must be <= max_tokens (10), got 50",
    ),
    "min_above_cap": (
        "{output_length: {distribution: uniform, min_tokens: 40}}",
        "experiment.prompts.output_length.min_tokens: must be <= output_tokens (32), got 40",
    ),
    "max_above_cap": (
        "{input_length: {distribution: uniform, min_tokens: 1, max_tokens: 65}}",
        "experiment.prompts.input_length.max_tokens: must be <= input_tokens (64), got 65",
    ),
    "negative_std": (
        "{output_length: {distribution: normal, mean_tokens: 10, std_tokens: -1}}",
        "experiment.prompts.output_length.std_tokens: must be >= 0, got -1",
    ),
    "normal_without_mean": (
        "{output_length: {distribution: normal, std_tokens: 1}}",
        "experiment.prompts.output_length.mean_tokens: is required by the 'normal'",
    ),
    "uniform_without_min": (
        "{output_length: {distribution: uniform, max_tokens: 8}}",
        "experiment.prompts.output_length.min_tokens: is required by the 'uniform'",
    ),
    "field_of_another_distribution": (
        "{output_length: {distribution: uniform, min_tokens: 1, mean_tokens: 4}}",
        "experiment.prompts.output_length.mean_tokens: is not used by the 'uniform'",
    ),
    "zero_min": (
        "{input_length: {distribution: uniform, min_tokens: 0}}",
        "experiment.prompts.input_length.min_tokens: must be >= 1, got 0",
    ),
    "reference_outside_sharegpt": (
        "{output_length: {distribution: reference}}",
        "experiment.prompts.output_length.distribution: 'reference' is only for",
    ),
    "unknown_distribution": (
        "{output_length: {distribution: zipf}}",
        "experiment.prompts.output_length.distribution: expected one of: 'fixed', 'normal', "
        "'reference', 'uniform', got 'zipf'",
    ),
    "unknown_length_field": (
        "{output_length: {distribution: fixed, tokens: 4}}",
        "experiment.prompts.output_length.tokens: unknown field",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_prompts_name_the_dotted_field_in_one_line(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    path = campaign(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        plan_campaign(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message, message


def test_a_grid_point_with_a_bad_length_is_refused(tmp_path: Path) -> None:
    grid = "grid: {output_tokens: [64, 8]}\n"
    path = campaign(tmp_path, "{output_length: {distribution: uniform, min_tokens: 16}}", grid)
    with pytest.raises(ConfigError, match=r"output_length\.min_tokens: must be <= output_tokens"):
        plan_campaign(path)


def test_config_problems_lists_every_problem() -> None:
    config = ExperimentConfig(
        prompts=PromptConfig(
            source="file",
            input_length=LengthDistribution(distribution="normal", mean_tokens=0.0, std_tokens=-2),
        )
    )
    fields = [field for field, _ in config_problems(config)]
    assert fields == [
        "prompts.input_length",
        "prompts.path",
        "prompts.input_length.mean_tokens",
        "prompts.input_length.std_tokens",
    ]


def test_shipped_sharegpt_example_passes_a_dry_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "campaign", "--dry-run",
         str(REPO / "configs" / "sharegpt-example.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sharegpt-example: 2 experiment(s) × 2 cycle(s)" in done.stdout
