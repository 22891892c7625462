"""Long output through a pager (coordinator/cli/pager.py): only on a terminal, only when
taller than it, never with LEM_NO_PAGER."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from lem.coordinator.cli import pager


def test_pager_only_on_a_terminal_and_not_with_lem_no_pager() -> None:
    assert pager.wants_pager(True, {})
    assert not pager.wants_pager(False, {})
    assert not pager.wants_pager(True, {"LEM_NO_PAGER": "1"})
    assert pager.wants_pager(True, {"LEM_NO_PAGER": ""})  # empty counts as unset


def test_output_taller_than_the_terminal_goes_through_the_pager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paged: list[str] = []
    monkeypatch.setattr(pager.click, "echo_via_pager", paged.append)
    monkeypatch.delenv("LEM_NO_PAGER", raising=False)

    def printed(lines: int, is_terminal: bool) -> str:
        out = Console(file=io.StringIO(), width=80, height=10, color_system=None)
        pager.print_paged([Text(f"line {i}") for i in range(lines)], out, is_terminal)
        assert isinstance(out.file, io.StringIO)
        return out.file.getvalue()

    assert printed(5, True) == "".join(f"line {i}\n" for i in range(5)) and not paged
    assert printed(30, False).count("\n") == 30 and not paged
    assert printed(30, True) == "" and paged == ["\n".join(f"line {i}" for i in range(30))]
    monkeypatch.setenv("LEM_NO_PAGER", "1")
    assert printed(30, True).count("\n") == 30 and len(paged) == 1
