"""``lem results export`` and ``lem compare`` (registered by cli.py).

Bad input — an unknown campaign, format, level or field, an unwritable path, a missing
optional package — prints one line to stderr and exits 2, with nothing half-written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from lem.coordinator.cli.common import bad_input, printable, store_option

if TYPE_CHECKING:
    from rich.table import Table

    from lem.coordinator.results.columns import Level
    from lem.coordinator.results.compare import CampaignComparison, ExperimentRef


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
    from lem.coordinator.results.table import experiment_rows, measurement_rows

    if level not in LEVELS:
        bad_input(f"--level: expected one of {', '.join(LEVELS)}, got {level!r}")
    chosen = format_of(output, fmt)  # StoreError, ExportError: bad input
    read = measurement_rows if level == "measurement" else experiment_rows
    rows = read(store_path, list(campaign_ids) or None)
    write_export(rows, cast("Level", level), chosen, output, sys.stdout)
    if output != "-":
        shown = printable(output)
        click.echo(f"lem: wrote {len(rows)} {level} row(s) to {shown} ({chosen})", err=True)


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
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(
    campaign_a: str,
    campaign_b: str,
    store_path: Path,
    store_b: Path | None,
    alpha: str,
    ignored: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare the matching experiments of campaigns A and B (ids or unique prefixes).

    Experiments match when their effective configs agree except for their names (and
    --ignore fields). Per metric: means, B − A, and Welch's t-test on per-cycle values.
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

    from lem.coordinator.results.view import shown

    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(_table(result))
    for pair in result.pairs:  # stored text: escaped, never markup (results/view.py)
        if pair.lock_mismatch:
            console.print(
                shown(
                    f"Engine environments differ for A#{pair.a.position} / "
                    f"B#{pair.b.position}: {pair.lock_mismatch}",
                    style="yellow",
                )
            )
    for side, refs in (("A", result.only_a), ("B", result.only_b)):
        if refs:
            console.print(shown(f"Only in {side} (no matching experiment): {_refs(refs)}"))


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def _refs(refs: list[ExperimentRef]) -> str:
    return ", ".join(f"#{r.position} {r.name or r.experiment_id}" for r in refs)


def _table(result: CampaignComparison) -> Table:
    from rich.table import Table
    from rich.text import Text

    from lem.coordinator.results.compare import METRICS
    from lem.coordinator.results.view import shown

    table = Table(
        title=shown(f"lem compare: A = {result.campaign_a}, B = {result.campaign_b}"),
        title_justify="left",
    )
    for header in ("A#", "B#", "Experiment", "Metric", "n A/B", "A mean", "B mean"):
        table.add_column(header, no_wrap=header != "Experiment", overflow="fold")
    for header in ("Δ (B−A)", "Δ %", "p", "Verdict"):
        table.add_column(header, no_wrap=True)
    for pair in result.pairs:
        name = pair.a.name or pair.a.experiment_id
        if pair.b.name != pair.a.name:
            name += f" / {pair.b.name or pair.b.experiment_id}"
        for m in pair.metrics:
            style = "" if m.significant is None else ("bold red" if m.significant else "green")
            table.add_row(
                str(pair.a.position),
                str(pair.b.position),
                shown(name),
                METRICS.get(m.metric, m.metric),
                f"{m.n_a}/{m.n_b}",
                _num(m.mean_a),
                _num(m.mean_b),
                _num(m.delta, "+.3g"),
                _num(m.delta_pct, "+.2f"),
                _num(m.p, ".2g"),
                Text(m.verdict, style=style),
            )
    if not result.pairs:
        table.caption = "no matching experiments"
    else:
        table.caption = (
            f"Means over ok cycles; Welch's t-test on per-cycle values, two-sided, "
            f"alpha={result.alpha:g} per test (with many rows, some 'significant' verdicts "
            f"are expected by chance). Matched on the effective config except: "
            f"{', '.join(result.ignored_fields)}. Method: lem docs results"
        )
    table.caption_justify = "left"
    return table
