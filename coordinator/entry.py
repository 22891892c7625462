"""The ``lem`` command's entry (``python -m lem.coordinator`` and the installed script).

Until a command installs its own handling (a campaign's ``execution/interrupts.py``),
Ctrl-C ends ``lem`` quietly with exit status 130 (``cli/common.py``) — also while its
modules are still being imported, hence this handler comes before them.

The handler raises ``SystemExit``, but CPython swallows an exception raised where it cannot
propagate (a weakref callback, a ``__del__``, importlib's module-lock callback: "Exception
ignored in …"). So the interrupt is also remembered: a campaign's own handling takes it up
when it is installed (``interrupts_raise``), and ``run`` exits 130 for it in any case.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130  # as cli/common.py, which this must not import yet
_pending: list[int] = []  # signals that arrived before a command's own handling


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)
    raise SystemExit(EXIT_INTERRUPTED)


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
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


def run() -> None:
    """Run ``lem`` with the arguments of this process."""
    sys.unraisablehook = _quiet_unraisable
    signal.signal(signal.SIGINT, _interrupted)
    from lem.coordinator.cli.main import main

    try:
        status = main()
    except SystemExit as done:
        status = done.code
    sys.exit(EXIT_INTERRUPTED if take_early_interrupt() else status)
