"""The ``lem report`` command (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from lem.coordinator.cli.common import printable, store_option


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
@store_option
def report_command(campaign_id: str, out_dir: Path, store_path: Path) -> None:
    """A self-contained HTML report of one campaign (id or unique prefix): DIR/index.html."""
    from lem.coordinator.report.page import write_report

    index = write_report(store_path, campaign_id, out_dir)  # ReportError: bad input
    click.echo(f"wrote {printable(index)}")
