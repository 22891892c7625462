"""``lem docs [NAME]``: the user documentation shipped with lem (package ``lem.docs``).

lem's messages point here (``Method: lem docs methodology``) rather than at a path of the
source tree, which an installed lem does not have.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable

import click

from lem.coordinator.cli.common import bad_input

DOCS_PACKAGE = "lem.docs"


def shipped_docs() -> dict[str, Traversable]:
    """Page name (``methodology``) → its shipped ``.md`` file, sorted by name."""
    folder = importlib.resources.files(DOCS_PACKAGE)
    pages = {f.name.removesuffix(".md"): f for f in folder.iterdir() if f.name.endswith(".md")}
    return dict(sorted(pages.items()))


def _title(page: Traversable) -> str:
    """A page's first heading, without its ``#``."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


@click.command("docs")
@click.argument("name", required=False)
@click.option("--path", "show_path", is_flag=True, help="Print the page's file, not its text.")
def docs_command(name: str | None, show_path: bool) -> None:
    """Print a page of lem's documentation (Markdown); without NAME, list the pages."""
    pages = shipped_docs()
    if name is None:
        for page_name, listed in pages.items():
            click.echo(f"{page_name:<14} {_title(listed)}")
        return
    page = pages.get(name.removesuffix(".md"))
    if page is None:
        bad_input(f"no documentation page {name!r}; pages: {', '.join(pages)}")
    click.echo(str(page) if show_path else page.read_text(encoding="utf-8"), nl=show_path)
