"""What every ``lem`` command shares: the default result store, the ``--store`` option,
the exit statuses, and the one-line refusal of bad input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

DEFAULT_STORE = Path("lem-results") / "lem.db"
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2  # bad input: one line on stderr, nothing written
EXIT_INTERRUPTED = 130

store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_STORE,
    show_default=True,
    help="SQLite result store.",
)


def bad_input(message: str) -> NoReturn:
    """Print ``lem: error: MESSAGE`` and exit with status 2."""
    click.echo(f"lem: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)
