"""``lem results show``, ``lem results export`` and ``lem compare`` (registered by main.py).

Bad input — an unknown campaign, format, level or field, an unwritable path, a missing
optional package — prints one line to stderr and exits 2, with nothing half-written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from lem.coordinator.cli.common import bad_input, path_exists, printable, store_option

if TYPE_CHECKING:
    from lem.coordinator.results.columns import Level


@click.command("show")
@click.argument("campaign_id")
@store_option
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every experiment's row, however many (through a pager on a terminal).",
)
@click.option(
    "--where",
    "conditions",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only experiments whose config leaf (batch_size, model.name, workload.mode, ...), "
    "status (ok, failed, pending) or flag is VALUE (YAML). Repeatable: all must hold.",
)
def show_command(
    campaign_id: str, store_path: Path, show_all: bool, conditions: tuple[str, ...]
) -> None:
    """One campaign: CAMPAIGN_ID is its id or a unique id prefix.

    Up to 50 experiments: every one's row. More: a summary (swept axes, counts, flags, the
    best and worst experiments by J/token); --all lists every row, --where filters.
    """
    from lem.coordinator.cli.pager import print_paged
    from lem.coordinator.results.overview import parse_where, read_campaign
    from lem.coordinator.results.summary import render_show
    from lem.coordinator.store.reading import connect_read_only

    wanted = parse_where(conditions)  # BadInput: one line, before the store is opened
    if not path_exists(store_path):
        bad_input(f"{store_path}: no result store here (run a campaign first, or pass --store)")
    conn, _ = connect_read_only(store_path)
    try:
        read = read_campaign(conn, campaign_id)
    finally:
        conn.close()
    print_paged(render_show(read, wanted, show_all))


@click.command("export")
@click.argument("campaign_ids", nargs=-1)
@store_option
@click.option(
    "--format",
    "fmt",
    default=None,
    help="csv, json or parquet (default: from the output's suffix, else csv).",
)
@click.option(
    "--level",
    default="measurement",
    show_default=True,
    help="measurement: one row per cycle; experiment: one row per experiment (statistics "
    "over its ok cycles).",
)
@click.option("-o", "--output", default="-", show_default=True, help="File to write; - for stdout.")
def export_command(
    campaign_ids: tuple[str, ...], store_path: Path, fmt: str | None, level: str, output: str
) -> None:
    """Export results as a table (columns and units: lem docs results).

    CAMPAIGN_IDS: ids or unique id prefixes; none exports every campaign.
    """
    from lem.coordinator.results.columns import LEVELS
    from lem.coordinator.results.export import format_of, write_export
    from lem.coordinator.results.table import ResultSet

    if level not in LEVELS:
        bad_input(f"--level: expected one of {', '.join(LEVELS)}, got {level!r}")
    chosen = format_of(output, fmt)  # StoreError, ExportError: bad input
    with ResultSet(store_path, list(campaign_ids) or None) as results:
        count = write_export(results, cast("Level", level), chosen, output, sys.stdout)
    if output != "-":
        shown = printable(output)
        click.echo(f"lem: wrote {count} {level} row(s) to {shown} ({chosen})", err=True)


@click.command("compare")
@click.argument("campaign_a")
@click.argument("campaign_b")
@store_option
@click.option(
    "--store-b",
    "store_b",
    type=click.Path(path_type=Path),
    default=None,
    help="Store of campaign B (default: --store).",
)
@click.option("--alpha", default="0.05", show_default=True, help="Significance level of each test.")
@click.option(
    "--ignore",
    "ignored",
    multiple=True,
    metavar="FIELD",
    help="Config field (dotted) left out of the matching, besides name; repeatable.",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every row and note, pair by pair (beyond 50 matched pairs, the default shows the "
    "significant rows first and counts the rest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON (every pair).")
def compare_command(
    campaign_a: str,
    campaign_b: str,
    store_path: Path,
    store_b: Path | None,
    alpha: str,
    ignored: tuple[str, ...],
    show_all: bool,
    as_json: bool,
) -> None:
    """Compare the matching experiments of campaigns A and B (ids or unique prefixes).

    Experiments match when their effective configs agree except for their names (and
    --ignore fields). Per metric: means, B − A, and Welch's t-test on per-cycle values.
    Beyond 50 matched pairs: significant differences first, the rest counted (--all: all).
    """
    from lem.coordinator.results.compare import compare_campaigns

    try:
        level = float(alpha)
    except ValueError:
        bad_input(f"--alpha: expected a number between 0 and 1, got {alpha!r}")
    try:
        result = compare_campaigns(
            store_path, campaign_a, campaign_b, store_b=store_b, alpha=level, ignore=ignored
        )
    except ValueError as exc:  # a StoreError is bad input by itself
        bad_input(str(exc))
    if as_json:
        import msgspec

        click.echo(msgspec.json.format(msgspec.json.encode(result), indent=2).decode())
        return
    from rich.console import Console

    from lem.coordinator.cli.compare_output import print_comparison

    console = Console() if sys.stdout.isatty() else Console(width=200)
    print_comparison(console, result, show_all)
