"""A rich table that fits the terminal it is printed on (``lem results list/show``).

Each column has a rank: 0 is essential and always shown; at a width too narrow for every
column, the highest-ranked are left out first, and a line under the table names them. A
column that is not a name never wraps or is cut: an id prints in full, so it can be copied.
A name column (``fold_at``) counts as needing up to that many characters when columns are
chosen; a longer name, or any name where the essential columns need the room, folds onto
more lines, down to ``MIN_NAME_WIDTH``. Only a terminal too narrow even for that folds the
other columns too (an id onto two lines), still without cutting any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

MIN_NAME_WIDTH = 8
_PADDING = 2  # a space each side of a cell
_RULE = 1  # the border right of each column (and one at the left edge)


@dataclass(frozen=True)
class Column:
    """``rank``: 0 always shown, higher left out sooner. ``fold_at``: a name column, which
    may fold onto more lines beyond that width (None: never wraps)."""

    header: str
    rank: int = 0
    justify: JustifyMethod = "left"
    fold_at: int | None = None


class FittedTable:
    """Rows of ``Text`` under ``columns``; rendered as a rich ``Table`` of the columns that
    fit ``options.max_width`` (see the module doc)."""

    def __init__(self, columns: Sequence[Column], title: str) -> None:
        self.columns = list(columns)
        self.title = title
        self.caption: str | None = None
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: Text | str) -> None:
        """One row; a ``str`` cell is plain text (not rich markup)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([Text(c) if isinstance(c, str) else c for c in cells])

    def _needed(self, index: int, squeezed: bool = False) -> int:
        """Characters column ``index`` needs, padding and its border included: a name
        column up to its ``fold_at`` (``squeezed``: ``MIN_NAME_WIDTH``)."""
        column = self.columns[index]
        content = max([cell_len(column.header), *(cell_len(row[index].plain) for row in self.rows)])
        if column.fold_at is not None:
            content = min(content, MIN_NAME_WIDTH if squeezed else column.fold_at)
        return content + _PADDING + _RULE

    def shown(self, width: int) -> tuple[list[int], bool]:
        """Indices of the columns shown at ``width`` — every essential one, then as many of
        the rest as fit, the lowest ranks kept (at equal rank, the leftmost) — and whether
        they fit with their names folded down to ``MIN_NAME_WIDTH``."""
        needed = [self._needed(i) for i in range(len(self.columns))]
        kept = set(range(len(self.columns)))
        by_drop_order = sorted(kept, key=lambda i: (-self.columns[i].rank, -i))
        for index in by_drop_order:
            if _RULE + sum(needed[i] for i in kept) <= width or self.columns[index].rank == 0:
                break
            kept.discard(index)
        squeezed = _RULE + sum(self._needed(i, squeezed=True) for i in kept)
        return sorted(kept), squeezed <= width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown, fits = self.shown(options.max_width)
        table = Table(title=self.title, title_justify="left", caption_justify="left")
        for index in shown:
            column = self.columns[index]
            folds = column.fold_at is not None
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=fits and not folds,  # too narrow even so: fold all rather than cut
                overflow="fold",
                min_width=MIN_NAME_WIDTH if folds else None,
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        table.caption = self.caption
        yield table
        left_out = [c.header for i, c in enumerate(self.columns) if i not in shown]
        if left_out:
            yield Text(
                f"Left out at {options.max_width} columns wide: {', '.join(left_out)} "
                "(a wider terminal shows them; lem results export has every figure)",
                style="dim",
            )
