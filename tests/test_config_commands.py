"""``lem config validate | show | schema`` and ``lem campaign --dry-run`` through the real
CLI; hostile campaign files exit 2 with exactly one line naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = "  model: {source: builtin, name: lem-tiny}\n"


def lem(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("lem: error: ")
    return lines[0]


def billion_laughs() -> str:
    """Nine levels of ten aliases: 10⁹ strings once expanded."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\nname: *l9\n"


def doubling_bomb() -> str:
    """Under 64 aliases, yet 2³¹ nodes once expanded."""
    lines = ["a0: &a0 [x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 31)]
    return "\n".join(lines) + "\nname: *a30\n"


def hostile_files(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """case → (campaign file, the file the message must name, expected text)."""
    campaign = tmp_path / "campaign"
    write(tmp_path, "outside.yaml", "experiment: {batch_size: 2}\n")
    campaign.mkdir()
    os.symlink(tmp_path / "outside.yaml", campaign / "link.yaml")
    outside = write(campaign, "outside.yaml", "_extends: ../outside.yaml\nname: c\n")
    linked = write(campaign, "linked.yaml", "_extends: link.yaml\nname: c\n")
    cycle_a = write(campaign, "a.yaml", "_extends: b.yaml\nname: c\n")
    cycle_b = write(campaign, "b.yaml", "_extends: [a.yaml]\n")
    unknown = write(campaign, "unknown.yaml", "name: c\nexperiment:\n" + TINY
                    + "grid: {batch_sizes: [1, 2]}\n")  # fmt: skip
    laughs = write(campaign, "laughs.yaml", billion_laughs())
    doubling = write(campaign, "doubling.yaml", doubling_bomb())
    huge = write(campaign, "huge.yaml", "name: c\n" + "# padding\n" * (1 << 20))
    return {
        "extends_outside": (outside, outside, "resolves outside the campaign's directory"),
        "extends_symlink_outside": (linked, linked, "resolves outside the campaign's directory"),
        "extends_cycle": (
            cycle_a,
            cycle_b,
            f"_extends: cycle: {cycle_a} -> b.yaml -> {cycle_a}",
        ),
        "unknown_grid_key": (unknown, unknown, "grid.batch_sizes: 'batch_sizes' is not a field"),
        "billion_laughs": (laughs, laughs, "over 64 YAML aliases; the limit is 64"),
        "doubling_bomb": (doubling, doubling, "nodes; the limit is 1000000"),
        "ten_mb_yaml": (huge, huge, "file is 10485768 bytes; the limit is 1048576"),
    }


CASES = ["extends_outside", "extends_symlink_outside", "extends_cycle", "unknown_grid_key",
         "billion_laughs", "doubling_bomb", "ten_mb_yaml"]  # fmt: skip


@pytest.mark.parametrize("command", ["campaign", "validate"])
@pytest.mark.parametrize("case", CASES)
def test_hostile_file_exits_2_with_one_line(case: str, command: str, tmp_path: Path) -> None:
    campaign, named, expected = hostile_files(tmp_path)[case]
    store = tmp_path / "store" / "lem.db"
    args = ["campaign", str(campaign), "--store", str(store)]
    done = lem(*args) if command == "campaign" else lem("config", "validate", str(campaign))
    line = one_line_error(done)
    assert line.startswith(f"lem: error: {named}: "), line
    assert expected in line, line  # the limit's own message: refused before expansion
    assert not store.parent.exists()


def test_validate_checks_points_up_to_a_bound(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: v\nexperiment:\n" + TINY
                 + "grid:\n  output_tokens: [32, 4]\n  prompts.output_length:\n"
                 + "    [null, {distribution: uniform, min_tokens: 8}]\ncycles: 2\n")  # fmt: skip
    bounded = lem("config", "validate", str(path), "--limit", "3")
    assert bounded.returncode == 0, bounded.stderr
    assert bounded.stdout.startswith(f"{path}: ok: campaign 'v', 4 experiment(s) × 2 cycle(s)")
    assert "validated the first 3 of 4 experiment(s) in full" in bounded.stdout
    line = one_line_error(lem("config", "validate", str(path)))
    assert line.startswith(f"lem: error: {path}: grid.prompts.output_length: value ")
    fine = write(
        tmp_path, "d.yaml", "name: d\nexperiment:\n" + TINY + "grid: {batch_size: [1, 2]}\n"
    )
    done = lem("config", "validate", str(fine))
    assert done.returncode == 0 and "validated all 2 experiment(s) in full" in done.stdout


def show_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """field → (value, source) from ``lem config show``'s table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_show_names_the_source_of_every_field(tmp_path: Path) -> None:
    write(tmp_path, "shared/base.yaml", "experiment:\n" + TINY + "  num_prompts: 3\n")
    path = write(tmp_path, "c.yaml", "_extends: shared/base.yaml\nname: s\n"
                 + "experiment: {output_tokens: 16}\ngrid: {batch_size: [1, 2]}\n")  # fmt: skip
    done = lem("config", "show", str(path), "--experiment", "1", "--set", "input_tokens=8")
    assert done.returncode == 0, done.stderr
    rows = show_rows(done.stdout)
    assert rows["timeout_s"] == ("3600.0", "default")
    assert rows["num_prompts"] == ("3", "shared/base.yaml")
    assert rows["model.name"] == ("lem-tiny", "shared/base.yaml")
    assert rows["output_tokens"] == ("16", str(path))
    assert rows["batch_size"] == ("2", "grid.batch_size")
    assert rows["input_tokens"] == ("8", "cli")
    assert rows["name"] == ("batch_size=2", "generated")
    from lem.coordinator.planning.provenance import effective_values
    from lem.protocol.config import ExperimentConfig

    assert set(rows) == set(effective_values(ExperimentConfig()))  # every field, one row each
    assert "experiment 1 of 2" in done.stdout
    line = one_line_error(lem("config", "show", str(path), "--experiment", "2"))
    assert "--experiment: 2 is not a position of this plan (0..1)" in line


def test_set_rejects_unknown_fields_and_axis_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: s\nexperiment:\n" + TINY + "grid: {batch_size: [1]}\n")
    line = one_line_error(lem("campaign", str(path), "--dry-run", "--set", "batchsize=2"))
    assert f"{path}: --set batchsize: 'batchsize' is not a field" in line
    line = one_line_error(lem("campaign", str(path), "--dry-run", "--set", "batch_size=2"))
    assert "--set batch_size: is an axis field (grid.batch_size)" in line
    line = one_line_error(lem("campaign", str(path), "--dry-run", "--set", "output_tokens=-1"))
    assert "--set output_tokens: must be >= 1, got -1" in line


def test_dry_run_shows_the_first_n(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: big\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2, 3, 4, 5],"
                 + " output_tokens: [1, 2, 3, 4, 5]}\n")  # fmt: skip
    store = tmp_path / "s" / "lem.db"
    done = lem("campaign", str(path), "--dry-run", "--show", "3", "--store", str(store))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "big: 25 experiment(s) × 1 cycle(s)"
    assert lines[1:4] == [f"  {i}: batch_size=1,output_tokens={i + 1}" for i in range(3)]
    assert lines[4] == "  ... 22 more (--show N lists more)"
    assert not store.parent.exists()


def test_schema_is_json_schema_of_the_campaign_file() -> None:
    done = lem("config", "schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    campaign = schema["$defs"]["CampaignSchema"]
    assert {"_extends", "name", "experiment", "experiments", "grid", "zip", "backends"} <= set(
        campaign["properties"]
    )
    assert campaign["required"] == ["name"]
    assert "batch_size" in schema["$defs"]["ExperimentConfig"]["properties"]


def test_shipped_grid_example() -> None:
    example = Path(__file__).parent.parent / "configs" / "grid-example.yaml"
    done = lem("campaign", str(example), "--dry-run", "--show", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("grid-example: 16 experiment(s) × 2 cycle(s)")
    rows = show_rows(lem("config", "show", str(example), "--experiment", "5").stdout)
    assert rows["device"] == ("cpu", "common/tiny-cpu.yaml")
    assert rows["name"][0].startswith("fp32[batch_size=4,")  # not eaten as rich markup
    assert rows["model.dtype"] == ("float32", "experiments[0]")
    assert rows["num_prompts"] == ("8", "zip.0")
    assert rows["output_tokens"] == ("16", str(example))
    cache = ("static", "backends.pytorch.grid.pytorch.cache_implementation")
    assert rows["pytorch.cache_implementation"] == cache
