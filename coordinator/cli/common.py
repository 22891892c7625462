"""What every ``lem`` command shares: the default result store, the ``--store`` option,
the exit statuses and the one place errors become them (``exit_status``, ``LemGroup``).

A command raises (or lets through) a ``LemError`` (``protocol/errors.py``); the top-level
group prints it as one line, ``lem: error: …``, and exits with its kind's status. Bad
input (``BadInput``: a config, campaign, store or option problem) exits 2 having written
nothing.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec
import structlog

from lem.protocol.bounds import printable as printable  # re-exported: commands print with it
from lem.protocol.errors import BadInput, LemError

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

# ipc://PATH, or tcp://HOST:PORT with HOST a name, an address or [an IPv6 address]
ENDPOINT = re.compile(r"ipc://[^\x00]+|tcp://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\*|[0-9]{1,5})")


def _endpoint(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Accept ipc://PATH and tcp://HOST:PORT (PORT a number or ``*``); tcp:// only where
    libzmq has CurveZMQ, which authenticates the workers (``execution/curve.py``)."""
    if value is None:
        return None
    match = ENDPOINT.fullmatch(value)
    if match is None or (match[1] not in (None, "*") and int(match[1]) > 65535):
        bad_input(f"--endpoint {value}: not ipc://PATH nor tcp://HOST:PORT (PORT a number or *)")
    if value.startswith("tcp://"):
        from lem.protocol.curve import CurveError, require_curve

        try:
            require_curve()
        except CurveError as exc:
            bad_input(f"--endpoint {value}: {exc}")
    return value


endpoint_option = click.option(
    "--endpoint",
    default=None,
    callback=_endpoint,
    help="Where the coordinator binds: ipc://PATH (default: a private one), or "
    "tcp://HOST:PORT (PORT * picks one) for workers that connect over the network, "
    "authenticated with CurveZMQ keys made for the campaign.",
)


def exit_status(error: LemError) -> int:
    """The exit status of ``error``'s kind: 2 bad input, 130 interrupted, else 1."""
    from lem.coordinator.execution.interrupts import Interrupted

    if isinstance(error, BadInput):
        return EXIT_BAD_INPUT
    if isinstance(error, Interrupted):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def path_exists(path: Path) -> bool:
    """Whether something is at ``path``; False too where the path cannot name a file (a
    name too long for the file system): the caller's "no store here", not an OSError."""
    try:
        return path.exists()
    except OSError:
        return False


def bad_input(message: str) -> NoReturn:
    """Refuse the command's input: ``lem: error: MESSAGE``, exit status 2."""
    raise BadInput(message)


def usage_line(error: click.UsageError) -> str:
    """A command line click cannot parse (an unknown option, a missing argument, a group
    without its command) as lem's one line: click's message, and where help is."""
    ctx = error.ctx
    message = error.format_message().removesuffix(".")
    if isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())) and ctx:
        assert isinstance(ctx.command, click.Group)
        message = f"missing command: one of {', '.join(ctx.command.list_commands(ctx))}"
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"lem: error: {printable(message)}{hint}"


class LemGroup(click.Group):
    """The ``lem`` group: a ``LemError`` from any command becomes ``lem: error: …`` on
    stderr (its traceback in the debug log) and the exit status of its kind; so does a
    command line click cannot parse (exit 2), at any level."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:  # lem's own options, or no command at all
            click.echo(usage_line(error), err=True)
            raise click.exceptions.Exit(EXIT_BAD_INPUT) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a subcommand's command line
            click.echo(usage_line(error), err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:  # Ctrl-C that no command handles: quietly, 130
            ctx.exit(EXIT_INTERRUPTED)
        except LemError as error:
            structlog.get_logger("lem").debug("command failed", exc_info=error)
            click.echo(f"lem: error: {printable(error)}", err=True)
            ctx.exit(exit_status(error))
        except (sqlite3.DatabaseError, msgspec.DecodeError, UnicodeDecodeError) as error:
            # a store damaged past what opening it checks: a page, a stored row that does
            # not decode, text that is not UTF-8
            structlog.get_logger("lem").debug("command failed", exc_info=error)
            store = _store_named(sys.argv[1:])
            line = f"{store}: a damaged or unreadable store: {error}"
            click.echo(f"lem: error: {printable(line)}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except UnicodeEncodeError as error:  # a command-line value that is not UTF-8 (its
            # bytes came in as surrogates) where text is needed: a campaign id, a field
            structlog.get_logger("lem").debug("command failed", exc_info=error)
            line = f"a command-line value is not UTF-8 text: {error.object!r}"
            click.echo(f"lem: error: {printable(line)}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except OSError as error:  # e.g. stdout on a full disk: one line, no traceback
            structlog.get_logger("lem").debug("command failed", exc_info=error)
            _quiet_stdout()
            click.echo(f"lem: error: {printable(error)}", err=True)
            ctx.exit(EXIT_FAILED)


def _store_named(args: list[str]) -> str:
    """The ``--store`` a command line (``sys.argv``) gives, else the default."""
    for i, arg in enumerate(args):
        if arg == "--store" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--store="):
            return arg.removeprefix("--store=")
    return str(DEFAULT_STORE)


def _quiet_stdout() -> None:
    """Drop what stdout still buffers where it cannot take it (a full disk, a closed pipe):
    else Python's exit reports the same failure again, with a traceback."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# The options of the commands that run campaigns (run, campaign, resume).
gpus_option = click.option("--gpus", default=None, help="GPU indices lem may use, e.g. 0,1.")
attempts_option = click.option(
    "--max-attempts",
    default=None,
    type=click.IntRange(min=1),
    help="Attempts a cycle gets when its worker dies, hangs or times out, or its started "
    "server does not start (default: the campaign file's max_attempts, else 2).",
)
parallel_option = click.option(
    "--max-parallel",
    default=None,
    type=click.IntRange(min=1),
    help="Most experiments run at once, each on its own GPUs (default: as many as fit; "
    "1: one at a time).",
)
cluster_option = click.option(
    "--cluster",
    default=None,
    metavar="ADDRESS",
    help="Run the workers on a Ray cluster: ray://HEAD:PORT, HEAD:PORT or auto (default: "
    "the campaign file's cluster, else this host). lem docs cluster.",
)
force_option = click.option(
    "--force", is_flag=True, help="Resume even though the campaign file changed."
)
