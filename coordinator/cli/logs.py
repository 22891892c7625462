"""structlog set-up: readable lines on a terminal, one JSON object a line with --log-json."""

from __future__ import annotations

import logging
import sys

import structlog

from lem.protocol.bounds import printable


def configure_logging(json_lines: bool, verbose: bool = False, quiet: bool = False) -> None:
    """Send logs to stderr; stdout stays free for tables and machine-readable output."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    renderer: structlog.typing.Processor
    if json_lines:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks
            if json_lines
            else structlog.processors.format_exc_info,
            *([] if json_lines else [escape_controls]),  # JSON escapes by itself
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


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
