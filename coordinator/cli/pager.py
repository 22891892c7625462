"""Long output through a pager, as git does: only when stdout is a terminal, only when the
output is taller than it, through ``$PAGER`` (click's choice: default ``less``, given
``LESS=-R`` for colour unless ``LESS`` is set), and never with ``LEM_NO_PAGER`` set."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import click
from rich.console import Console, RenderableType

from lem.protocol.variables import NO_PAGER


def console() -> Console:
    """Tables at the terminal's width; piped output gets room instead of folded cells."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def wants_pager(is_terminal: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Whether output may go through a pager: stdout a terminal and no ``LEM_NO_PAGER``."""
    return is_terminal and NO_PAGER.get(environ) is None


def print_paged(
    renderables: Sequence[RenderableType],
    out: Console | None = None,
    is_terminal: bool | None = None,
) -> None:
    """Print ``renderables`` on ``out`` (default ``console()``); through a pager where
    ``wants_pager`` (``is_terminal``: default, whether stdout is one) and the output has
    more lines than the terminal."""
    out = out or console()
    if not wants_pager(sys.stdout.isatty() if is_terminal is None else is_terminal):
        for renderable in renderables:
            out.print(renderable)
        return
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    text = captured.get()
    if text.count("\n") < out.size.height:
        out.file.write(text)
        out.file.flush()
    else:
        click.echo_via_pager(text.removesuffix("\n"))
