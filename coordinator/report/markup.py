"""HTML building blocks for the report: every text goes through ``esc`` (html.escape);
a missing figure is ``—`` with its reason, never 0."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from lem.coordinator.results.view import FLAG_MEANINGS, HIGH_CV_MEANING

NULL = "—"
NOT_RECORDED = "not recorded"


def esc(value: Any) -> str:
    """``value`` as HTML text: escaped, quotes included."""
    return html.escape(str(value), quote=True)


def flag_meaning(flag: str) -> str:
    """What a flag means, in ``lem results show``'s words."""
    if flag == "high_cv":
        return HIGH_CV_MEANING
    return FLAG_MEANINGS.get(flag, "(no explanation recorded for this flag)")


def flag_badges(flags: Sequence[str]) -> str:
    """One red badge per flag, linking to its explanation in the flags section."""
    return " ".join(
        f'<a class="flag" href="#flag-{esc(f)}" title="{esc(flag_meaning(f))}">{esc(f)}</a>'
        for f in flags
    )


def null(reason: str | None) -> str:
    """``—`` and the reason it is missing (``not recorded`` when none was given)."""
    why = reason or NOT_RECORDED
    return f'<span class="null" title="{esc(why)}">{NULL} <small>({esc(why)})</small></span>'


def number(value: float | int | None, digits: int = 3, unit: str = "") -> str | None:
    """``value`` to ``digits`` significant figures (thousands separated), or None."""
    if value is None:
        return None
    if isinstance(value, int) or abs(value) >= 10**digits:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}g}"
    return f"{text} {unit}".rstrip()


class Notes:
    """Numbered reasons listed once under a table, so that cells stay narrow."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._numbers: dict[str, int] = {}

    def ref(self, reason: str | None) -> str:
        """A numbered link to ``reason`` (``not recorded`` when None) in the notes."""
        why = reason or NOT_RECORDED
        number = self._numbers.setdefault(why, len(self._numbers) + 1)
        return f'<a href="#{self._prefix}-note-{number}"><sup>[{number}]</sup></a>'

    def mark(self, reason: str | None) -> str:
        """``—`` with a numbered link to ``reason``."""
        why = esc(reason or NOT_RECORDED)
        return f'<span class="null" title="{why}">{NULL} {self.ref(reason)}</span>'

    def cell(self, text: str | None, reason: str | None) -> str:
        """``text`` (already HTML) when there is one, else the marked reason."""
        return text if text is not None else self.mark(reason)

    def render(self) -> str:
        if not self._numbers:
            return ""
        items = "".join(
            f'<li id="{self._prefix}-note-{n}" value="{n}">{esc(reason)}</li>'
            for reason, n in self._numbers.items()
        )
        return f'<ol class="notes">{items}</ol>'


def table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table: ``header`` is plain text (escaped here); row cells are HTML already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(pairs: Sequence[tuple[str, str]]) -> str:
    """A two-column table of label (plain text) and value (HTML)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def text_or_null(value: Any, reason: str | None = None) -> str:
    """``value`` escaped, or ``—`` with ``reason`` when it is None or empty."""
    if value is None or value == "" or value == [] or value == {}:
        return null(reason)
    return esc(value)
