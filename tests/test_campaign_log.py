"""Where log lines go during a campaign: on a terminal the live display replaces the info
lines (they go to the campaign's log file), warnings still print above it, ``-v`` brings the
info lines back, and without a terminal nothing changes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from rich.console import Console

from lem.coordinator.cli.logs import configure_logging, log_file
from lem.coordinator.cli.progress import CampaignProgress, live_display

log = structlog.get_logger("lem.campaign")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def fake_terminal(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def log_a_cycle() -> None:
    log.info("loading", model="lem-tiny")
    log.info("measuring", detail="4 prompts")
    log.warning("power limit below default", limit_w=250)


def test_on_a_terminal_info_lines_go_to_the_log_file_only_and_warnings_still_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json_lines=False)
    console, out = fake_terminal(terminal=True)
    with log_file(tmp_path / "campaign.log") as path:
        with live_display(CampaignProgress("tiny", 2, 1), console):
            log_a_cycle()
        log.info("after the display")
    shown = out.getvalue() + capsys.readouterr().err
    assert "loading" not in shown and "measuring" not in shown
    assert "power limit below default" in shown and "limit_w=250" in shown
    assert "after the display" in shown  # the terminal shows info lines again
    written = path.read_text()
    assert "loading" in written and "model=lem-tiny" in written and "measuring" in written
    assert "power limit below default" in written and "after the display" in written
    assert "\x1b[" not in written  # the file gets no colours


def test_verbose_shows_the_info_lines_above_the_display_on_a_terminal(tmp_path: Path) -> None:
    configure_logging(json_lines=False, verbose=True)
    console, out = fake_terminal(terminal=True)
    model = CampaignProgress("tiny", 2, 1)
    with log_file(tmp_path / "campaign.log"), live_display(model, console):
        log_a_cycle()
        log.debug("heartbeat", worker="w1")
    shown = out.getvalue()
    assert "loading" in shown and "measuring" in shown and "power limit below" in shown
    assert "heartbeat" in shown and "heartbeat" in (tmp_path / "campaign.log").read_text()


def test_without_a_terminal_info_lines_print_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json_lines=False)
    console, _ = fake_terminal(terminal=False)
    model = CampaignProgress("tiny", 2, 1)
    with log_file(tmp_path / "campaign.log") as path, live_display(model, console):
        log_a_cycle()
    shown = capsys.readouterr().err
    assert "loading" in shown and "measuring" in shown and "power limit below" in shown
    assert "loading" in path.read_text()


def test_the_log_file_gets_info_lines_even_with_quiet_and_json_with_log_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json_lines=False, quiet=True)
    with log_file(tmp_path / "quiet.log") as path:
        log_a_cycle()
    assert "loading" not in capsys.readouterr().err and "loading" in path.read_text()
    configure_logging(json_lines=True)
    with log_file(tmp_path / "json.log") as path:
        log_a_cycle()
    first = json.loads(path.read_text().splitlines()[0])
    assert (first["event"], first["model"], first["level"]) == ("loading", "lem-tiny", "info")
    log.info("file closed")
    assert "file closed" not in path.read_text()
