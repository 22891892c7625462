"""Bounds every value of a config obeys, whatever its field: ints fit in 32 bits, floats
are finite and at most ``MAX_FLOAT`` in size, and strings hold no control characters
(a name with an escape sequence or a newline would reach the terminal).

Field-specific ranges (``batch_size >= 1``, …) are checked where each field is
(``config_problems``); these bounds come first and keep NaN (which compares false with
everything, so ``timeout_s: .nan`` would pass ``timeout_s <= 0``), infinity and integers
too big for a C ``int`` or a timeout out of every config, experiment or campaign, and
keep names printable.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

MAX_INT = 2**31 - 1
MIN_INT = -(2**31)
# ~31.7 years in seconds; below threading.TIMEOUT_MAX, far above any real rate or count.
MAX_FLOAT = 1e9


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a character a terminal would act on (C0, DEL, C1)."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def printable(text: object) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``): what lem
    prints of its input (names, error lines) can't move the cursor or forge a line."""
    shown = str(text)
    if not has_control_characters(shown):
        return shown
    return "".join(repr(ch)[1:-1] if has_control_characters(ch) else ch for ch in shown)


def value_problem(value: Any) -> str | None:
    """Why ``value`` breaks the bounds, or None (booleans, None and the rest: None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and has_control_characters(value):
        return f"must not contain control characters, got {value!r}"
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        return f"must be an integer from {MIN_INT} to {MAX_INT}, got {value}"
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_FLOAT):
        return f"must be a finite number from {-MAX_FLOAT:g} to {MAX_FLOAT:g}, got {value}"
    return None


def value_problems(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, problem) for every number or string in ``value`` (a struct, mapping or list,
    walked through) that breaks the bounds; list items are named by position."""
    problems: list[tuple[str, str]] = []
    items: list[tuple[str, Any]]
    if isinstance(value, msgspec.Struct):
        items = [(f.encode_name, getattr(value, f.name)) for f in msgspec.structs.fields(value)]
    elif isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(n), v) for n, v in enumerate(value)]
    else:
        problem = value_problem(value)
        return [(prefix.rstrip("."), problem)] if problem else []
    for name, child in items:
        problems.extend(value_problems(child, f"{prefix}{name}."))
    return problems
