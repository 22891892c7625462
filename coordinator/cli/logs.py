"""structlog set-up: readable lines on a terminal, one JSON object a line with --log-json.

Every log line goes to stderr (stdout stays free for tables and machine-readable output)
if its level reaches the terminal's: info (debug with ``-v``, warning with ``-q``). While
a campaign runs, ``log_file`` also writes every line of info and above (debug with
``-v``) to the campaign's log file, whatever the terminal shows. While the live display
draws on a terminal (``terminal_info_hidden``), info lines go to that file only, so they
do not bury the display; warnings and errors still print above it, and ``-v`` brings
every line back. Without a terminal (CI, pipes) nothing is hidden.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import structlog

from lem.protocol.bounds import printable

CAMPAIGN_LOG = "campaign.log"
"""A campaign's log file, in its run folder (``runs/<campaign>/``)."""


class _Sink:
    """Where rendered lines go: stderr from ``terminal_level`` up, the open log file (if
    any) from ``file_level`` up. Shared by every logger; safe across lanes' threads."""

    def __init__(self, terminal_level: int, file_level: int, verbose: bool) -> None:
        self.terminal_level = terminal_level
        self.file_level = file_level
        self.verbose = verbose
        self.file: TextIO | None = None
        self.lock = threading.Lock()

    def write(self, level: int, terminal_line: str, file_line: str) -> None:
        with self.lock:
            if level >= self.terminal_level:
                stream = sys.stderr  # looked up now: rich's proxy while the display draws
                stream.write(terminal_line + "\n")
                stream.flush()
            if self.file is not None and level >= self.file_level:
                self.file.write(file_line + "\n")
                self.file.flush()


_sink = _Sink(logging.INFO, logging.INFO, verbose=False)


class _SplitLogger:
    """structlog's logger: hands each line (terminal's, file's), with its level, to the sink."""

    def debug(self, terminal_line: str, file_line: str) -> None:
        _sink.write(logging.DEBUG, terminal_line, file_line)

    def info(self, terminal_line: str, file_line: str) -> None:
        _sink.write(logging.INFO, terminal_line, file_line)

    def warning(self, terminal_line: str, file_line: str) -> None:
        _sink.write(logging.WARNING, terminal_line, file_line)

    def error(self, terminal_line: str, file_line: str) -> None:
        _sink.write(logging.ERROR, terminal_line, file_line)

    def critical(self, terminal_line: str, file_line: str) -> None:
        _sink.write(logging.CRITICAL, terminal_line, file_line)

    msg = info
    warn = warning
    exception = err = error
    fatal = critical


def _split_logger(*_args: Any) -> _SplitLogger:
    return _SplitLogger()


class _Render:
    """The last processor: the line for the terminal (coloured there) and for the file."""

    def __init__(self, json_lines: bool, colors: bool) -> None:
        plain: structlog.typing.Processor
        terminal: structlog.typing.Processor
        if json_lines:
            plain = structlog.processors.JSONRenderer()
            terminal = plain
        else:
            plain = structlog.dev.ConsoleRenderer(colors=False)
            terminal = structlog.dev.ConsoleRenderer(colors=True) if colors else plain
        self._terminal = terminal
        self._plain = plain

    def __call__(
        self, logger: Any, method: str, event: structlog.typing.EventDict
    ) -> tuple[tuple[str, str], dict[str, Any]]:
        terminal = str(self._terminal(logger, method, dict(event)))
        if self._plain is self._terminal:
            return (terminal, terminal), {}
        return (terminal, str(self._plain(logger, method, event))), {}


def configure_logging(json_lines: bool, verbose: bool = False, quiet: bool = False) -> None:
    """Send logs to stderr; stdout stays free for tables and machine-readable output."""
    global _sink
    file_level = logging.DEBUG if verbose else logging.INFO
    terminal_level = file_level if not quiet or verbose else logging.WARNING
    _sink = _Sink(terminal_level, file_level, verbose)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks
            if json_lines
            else structlog.processors.format_exc_info,
            *([] if json_lines else [escape_controls]),  # JSON escapes by itself
            _Render(json_lines, colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(file_level),
        logger_factory=_split_logger,
        cache_logger_on_first_use=False,
    )


@contextmanager
def log_file(path: Path) -> Iterator[Path]:
    """Also write every line of info and above (debug with ``-v``) to ``path`` (appended:
    a resumed campaign goes on in the same file) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = _sink
    with open(path, "a", encoding="utf-8") as file:
        with sink.lock:
            previous, sink.file = sink.file, file
        try:
            yield path
        finally:
            with sink.lock:
                sink.file = previous


@contextmanager
def terminal_info_hidden(terminal: bool) -> Iterator[None]:
    """While the block runs, on a ``terminal`` and without ``-v``, show warnings and
    errors only there: info lines go to the log file alone. Off a terminal: no change."""
    sink = _sink
    if not terminal or sink.verbose:
        yield
        return
    with sink.lock:
        previous = sink.terminal_level
        sink.terminal_level = max(previous, logging.WARNING)
    try:
        yield
    finally:
        with sink.lock:
            sink.terminal_level = previous


def escape_controls(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every string of a terminal log line with its control characters escaped (a
    traceback keeps its line breaks): input quoted in a message can't act on the terminal."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            lines = value.split("\n") if key == "exception" else [value]
            event_dict[key] = "\n".join(printable(line) for line in lines)
    return event_dict
