"""``lem config validate | show | schema``: check a campaign file, show one experiment's
effective configuration with each field's source, print the campaign file's JSON Schema.

Bad input exits 2 with one line (``lem: error: file: field: problem``), as everywhere.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lem.coordinator.cli.common import bad_input, printable

DEFAULT_VALIDATE_LIMIT = 100_000
MAX_OVERRIDE_CHARS = 4096

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override an experiment field (dotted, e.g. batch_size=4; VALUE is YAML). Repeatable.",
)


def parse_overrides(overrides: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``("a.b=4", ...)`` → ``[("a.b", 4), ...]``; values are YAML scalars or flow YAML,
    within the limits of a config file's YAML (``planning/safe_yaml.py``)."""
    from lem.coordinator.planning.safe_yaml import YamlProblem, load_yaml

    parsed: list[tuple[str, Any]] = []
    for item in overrides:
        dotted, sep, text = item.partition("=")
        if not sep or not dotted.strip():
            bad_input(f"--set: expected FIELD=VALUE, got {item!r}")
        if len(text) > MAX_OVERRIDE_CHARS:
            bad_input(f"--set {dotted}: value longer than {MAX_OVERRIDE_CHARS} characters")
        try:
            value = load_yaml(text)  # the limits of a config file's YAML
        except YamlProblem as exc:
            shown = text if len(text) <= 60 else text[:60] + "…"
            bad_input(f"--set {dotted}: cannot read {shown!r} as a YAML value: {exc}")
        parsed.append((dotted.strip(), value))
    return parsed


def _plan(path: Path, overrides: tuple[str, ...]) -> Any:
    from lem.coordinator.planning.campaign import plan_campaign

    return plan_campaign(path, parse_overrides(overrides))


@click.group("config")
def config_group() -> None:
    """Check campaign files and see where each setting comes from."""


@config_group.command("validate")
@click.argument("campaign_file", type=click.Path(path_type=Path))
@click.option(
    "--limit",
    "limit_points",
    default=DEFAULT_VALIDATE_LIMIT,
    show_default=True,
    type=click.IntRange(min=0),
    help="Validate at most this many experiments in full.",
)
@set_option
def validate_command(campaign_file: Path, limit_points: int, overrides: tuple[str, ...]) -> None:
    """Validate CAMPAIGN_FILE: every axis value, then each experiment in full up to --limit."""
    started_s = time.monotonic()
    plan = _plan(campaign_file, overrides)
    total = len(plan.experiments)
    checked = 0
    for _ in itertools.islice(plan.experiments, limit_points):
        checked += 1
    duration_s = time.monotonic() - started_s
    scope = "all" if checked == total else f"the first {checked} of"
    click.echo(
        f"{printable(campaign_file)}: ok: campaign {plan.name!r}, {total} experiment(s) × "
        f"{plan.cycles} cycle(s), order {plan.order}; validated {scope} {total} experiment(s) "
        f"in full in {duration_s:.2f} s"
    )


@config_group.command("show")
@click.argument("campaign_file", type=click.Path(path_type=Path))
@click.option("--experiment", "position", default=0, show_default=True, type=int,
              help="Which experiment (its position in the plan).")  # fmt: skip
@set_option
def show_command(campaign_file: Path, position: int, overrides: tuple[str, ...]) -> None:
    """The effective configuration of one experiment, each field with its source."""
    from lem.coordinator.planning.provenance import effective_values

    plan = _plan(campaign_file, overrides)
    total = len(plan.experiments)
    if not 0 <= position < total:
        bad_input(f"--experiment: {position} is not a position of this plan (0..{total - 1})")
    experiment = plan.experiments[position]
    title = f"{plan.name}: experiment {position} of {total}: {experiment.name}"
    table = Table(title=escape(title))
    for column in ("field", "value", "source"):
        table.add_column(column)
    for dotted, value in effective_values(experiment.config).items():
        shown = msgspec.json.encode(value).decode() if not isinstance(value, str) else value
        source = experiment.provenance.get(dotted, "default")
        table.add_row(escape(dotted), escape(shown), escape(source))
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)


@config_group.command("schema")
def schema_command() -> None:
    """JSON Schema of a campaign file (its experiments typed as ExperimentConfig)."""
    from lem.coordinator.planning.campaign import CampaignSchema

    schema = msgspec.json.schema(CampaignSchema)
    click.echo(msgspec.json.format(msgspec.json.encode(schema), indent=2).decode())
