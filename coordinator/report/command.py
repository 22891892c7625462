"""The ``lem report`` command (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from lem.coordinator.cli.common import bad_input, printable, store_option


@click.command("report")
@click.argument("campaign_id")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for index.html (created if missing).",
)
@click.option(
    "--experiment",
    "experiments",
    metavar="NAME_OR_POSITION",
    multiple=True,
    help="Show this experiment one by one (id, name or plan position) even in a campaign "
    "too large for the page to show them all. Repeatable.",
)
@store_option
def report_command(
    campaign_id: str, out_dir: Path, experiments: tuple[str, ...], store_path: Path
) -> None:
    """A self-contained HTML report of one campaign (id or unique prefix): DIR/index.html.

    Above 50 experiments the page shows every experiment in its per-axis plots and Pareto
    fronts, but only a sample one by one (the Pareto fronts, the flagged, the best and worst
    J/token and any --experiment), and writes DIR/experiments.csv of all of them."""
    from lem.coordinator.report.page import write_report

    if str(out_dir) == "-":  # everywhere else in lem "-" is standard output
        bad_input("report -o -: a report is a folder (index.html and its files), not standard "
                  "output: name a folder")  # fmt: skip
    index = write_report(store_path, campaign_id, out_dir, experiments)  # ReportError: bad input
    click.echo(f"wrote {printable(index)}")
