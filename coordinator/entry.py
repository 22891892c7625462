"""The ``lem`` command's entry (``python -m lem.coordinator`` and the installed script).

Until a command installs its own handling (a campaign's ``execution/interrupts.py``),
Ctrl-C ends ``lem`` quietly with exit status 130 (``cli/common.py``) — also while its
modules are still being imported, hence this handler comes before them. An interrupt that
CPython swallowed on the way is still honoured (``early_interrupt.py``).
"""

from __future__ import annotations

import signal
import sys

from lem.coordinator.early_interrupt import (
    EXIT_INTERRUPTED,
    interrupted,
    quiet_unraisable,
    take_early_interrupt,
)


def run() -> None:
    """Run ``lem`` with the arguments of this process."""
    sys.unraisablehook = quiet_unraisable
    signal.signal(signal.SIGINT, interrupted)
    from lem.coordinator.cli.main import main

    try:
        status = main()
    except SystemExit as done:
        status = done.code
    sys.exit(EXIT_INTERRUPTED if take_early_interrupt() else status)
