"""``lem docs``: the documentation lem's messages point to is shipped (package ``lem.docs``),
and what the CLI prints names it by ``lem docs NAME``, never by a path of the source tree."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from lem.coordinator.cli.docs_command import shipped_docs
from lem.coordinator.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("api", "protocol", "coordinator", "workers")
DOCS_POINTER = re.compile(r"lem docs ([a-z][a-z0-9-]*)")
SOURCE_DOC_PATH = re.compile(r"\bdocs/[\w-]+\.md\b")


def pages_named_by_product_code() -> set[str]:
    """Every ``lem docs NAME`` written anywhere in lem's product code."""
    named: set[str] = set()
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            named.update(DOCS_POINTER.findall(path.read_text(encoding="utf-8")))
    return named


def test_lists_the_pages() -> None:
    done = CliRunner().invoke(main, ["docs"])
    assert done.exit_code == 0, done.output
    assert "methodology    How lem measures energy" in done.output
    assert {"methodology", "results", "campaigns", "measurements"} <= set(shipped_docs())


def test_prints_a_page_or_its_file() -> None:
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert CliRunner().invoke(main, ["docs", "results"]).output == text
    assert CliRunner().invoke(main, ["docs", "results.md"]).output == text
    done = CliRunner().invoke(main, ["docs", "--path", "methodology"])
    assert Path(done.output.strip()).read_text(encoding="utf-8").startswith("# How lem")


def test_unknown_page_is_bad_input() -> None:
    done = CliRunner().invoke(main, ["docs", "nope"])
    assert done.exit_code == 2
    assert "no documentation page 'nope'; pages: architecture, campaigns" in done.output


def test_every_page_a_message_names_is_shipped() -> None:
    named = pages_named_by_product_code()
    assert {"methodology", "results", "measurements"} <= named  # the pointers are found
    assert named <= set(shipped_docs())


def _help_texts(command: click.Command, path: list[str]) -> dict[str, str]:
    """``--help`` of ``command`` and of every subcommand under it."""
    texts = {" ".join(path): CliRunner().invoke(main, [*path[1:], "--help"]).output}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            texts.update(_help_texts(sub, [*path, name]))
    return texts


def test_cli_text_names_no_source_tree_doc() -> None:
    """Help texts and the config schema (the protocol's docstrings) work without a checkout."""
    texts = _help_texts(main, ["lem"])
    assert "lem results export" in texts and "lem docs" in texts
    texts["lem config schema"] = CliRunner().invoke(main, ["config", "schema"]).output
    for name, text in texts.items():
        assert not SOURCE_DOC_PATH.search(text), f"{name}: {SOURCE_DOC_PATH.search(text)}"
