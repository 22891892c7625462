"""Hostile files and YAML through the real CLI (issue 15): duplicate keys, devices and
FIFOs, deep nesting and ``--set`` values each exit 2 with one line naming file, field and
problem, quickly and without a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli_input import BASE, lem, refused, write

# 5: duplicate keys


def test_duplicate_key_is_refused_naming_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "grid: {batch_size: [1, 2]}\ngrid: {batch_size: [4]}\n")
    refused(lem("config", "validate", str(path)), str(path), "duplicate key 'grid'", "line 5")


def test_duplicate_nested_key_and_in_set_value(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "  batch_size: 1\n  batch_size: 2\n")
    refused(lem("campaign", str(path), "--dry-run"), "duplicate key 'batch_size'", "line 5")
    path = write(tmp_path, BASE, "ok.yaml")
    done = lem("config", "validate", str(path), "--set", "model={name: a, name: b}")
    refused(done, "--set model", "duplicate key 'name'")


# 8: not a regular file; a byte cap


def test_dev_zero_is_refused(tmp_path: Path) -> None:
    refused(lem("config", "validate", "/dev/zero", timeout=20), "/dev/zero", "not a regular file")


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    refused(lem("campaign", str(fifo), "--dry-run", timeout=20), str(fifo), "not a regular file")


def test_extends_target_must_be_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "base.yaml")
    path = write(tmp_path, "_extends: base.yaml\n" + BASE)
    refused(lem("config", "validate", str(path), timeout=20), "_extends", "not a regular file")


def test_reading_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that grows after its size was checked is still read only to the limit."""
    from lem.coordinator.planning import config_loader, safe_yaml
    from lem.coordinator.planning.config_loader import ConfigError, read_yaml_mapping

    path = write(tmp_path, BASE + "#" * 200 + "\n")
    monkeypatch.setattr(config_loader, "MAX_FILE_BYTES", 100)
    real_stat = os.stat

    def small_stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(target, *args, **kwargs)
        values = list(result)
        values[6] = 10  # st_size: as if the file grew after the check
        return os.stat_result(values)

    monkeypatch.setattr(safe_yaml.os, "stat", small_stat)
    with pytest.raises(ConfigError, match="the limit is 100"):
        read_yaml_mapping(path)


# 9: depth, and the same limits for --set


def test_deep_nesting_is_refused_fast(tmp_path: Path) -> None:
    path = write(tmp_path, "name: c\nexperiment: " + "[" * 10_000 + "]" * 10_000 + "\n")
    done = lem("config", "validate", str(path), timeout=10)
    refused(done, str(path), "nested deeper than")


def test_deep_nesting_through_aliases_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 " + "[" * 30 + "]" * 30]
    lines += [f"a{i}: &a{i} " + "[" * 30 + f"*a{i - 1}" + "]" * 30 for i in range(1, 40)]
    path = write(tmp_path, "\n".join(lines) + "\nname: c\n")
    refused(lem("config", "validate", str(path), timeout=10), "nested deeper than")


def test_set_values_get_the_yaml_limits(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    bomb = "[" + ", ".join(["&a [1, 1]"] + [f"&a{i} [*a, *a]" for i in range(100)]) + "]"
    refused(lem("config", "validate", str(path), "--set", f"name={bomb}"), "--set name", "alias")
    deep = "[" * 500 + "]" * 500
    refused(lem("config", "validate", str(path), "--set", f"name={deep}"), "nested deeper than")


# Found by the fuzz test (tests/fuzz): each was a traceback


def test_a_surrogate_escape_is_refused_in_a_file_and_in_set(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '  "\\ud800\\udc00": 1\n')
    refused(lem("config", "validate", str(path)), str(path), "surrogate", "line 4")
    path = write(tmp_path, BASE, "ok.yaml")
    done = lem("config", "validate", str(path), "--set", 'name="\\ud83d\\ude00"')
    refused(done, "--set name", "surrogate")


@pytest.mark.parametrize("value", ["!!timestamp nope", "!!bool maybe", "!!int 0x", '!!int ""'])
def test_a_scalar_its_explicit_tag_cannot_read_is_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, BASE + f"  batch_size: {value}\n")
    refused(lem("config", "validate", str(path)), str(path), "a value its tag cannot make")
    path = write(tmp_path, BASE, "ok.yaml")
    done = lem("config", "validate", str(path), "--set", f"name={value}")
    refused(done, "--set name", "a value its tag cannot make")


def test_extends_targets_that_cannot_resolve_are_the_files_problem(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    for target, problem in [
        ("loop.yaml", "a symlink loop"),
        ("a\\0b.yaml", "embedded null byte"),
        ("x" * 5000, "File name too long"),
    ]:
        path = write(tmp_path, f'_extends: "{target}"\n' + BASE)
        line = refused(lem("config", "validate", str(path)), str(path), "_extends", problem)
        assert len(line) < 300, line  # the target is shown cut


def test_a_campaign_file_that_is_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "c.yaml"
    loop.symlink_to(loop)
    for args in (["config", "validate", str(loop)], ["campaign", str(loop), "--dry-run"]):
        refused(lem(*args), str(loop), "symlink")


def test_an_alias_to_no_anchor_or_inside_its_own_says_so(tmp_path: Path) -> None:
    """Both read "nested deeper than 64 levels" before (found by the fuzz test)."""
    path = write(tmp_path, BASE + "grid: {batch_size: *nope}\n")
    refused(lem("config", "validate", str(path)), "alias *nope is to no anchor", "line 4")
    path = write(tmp_path, BASE + "grid: {batch_size: &a [1, *a]}\n")
    refused(lem("config", "validate", str(path)), "alias *a is inside its own anchor")
