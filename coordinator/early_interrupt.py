"""Ctrl-C before a command's own handling exists (``entry.py`` installs the handler first).

The handler raises ``SystemExit``, but CPython swallows an exception raised where it cannot
propagate (a weakref callback, a ``__del__``, importlib's module-lock callback: "Exception
ignored in …"). So the interrupt is also remembered here: a campaign's own handling takes
it up when it is installed (``execution/interrupts.py``), and the entry exits 130 for it in
any case. This module imports nothing of lem's, so both can import it.
"""

from __future__ import annotations

import sys
from types import FrameType

EXIT_INTERRUPTED = 130  # as cli/common.py, which must not be imported yet
_pending: list[int] = []  # signals that arrived before a command's own handling


def interrupted(signum: int, frame: FrameType | None) -> None:
    """The SIGINT handler until a command installs its own."""
    _pending.append(signum)
    raise SystemExit(EXIT_INTERRUPTED)


def quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Our own swallowed ``SystemExit`` is remembered, not printed as a traceback."""
    if isinstance(unraisable.exc_value, SystemExit) and _pending:
        return
    sys.__unraisablehook__(unraisable)


def take_early_interrupt() -> bool:
    """Whether an interrupt arrived before now that may have been swallowed; taking it
    clears it (it is then the caller's to act on)."""
    seen = bool(_pending)
    _pending.clear()
    return seen
