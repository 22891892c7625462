"""The ``lem`` command's entry (``python -m lem.coordinator`` and the installed script).

Until a command installs its own handling (a campaign's ``execution/interrupts.py``),
Ctrl-C ends ``lem`` quietly with exit status 130 (``cli/common.py``) — also while its
modules are still being imported, hence this handler comes before them.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130  # as cli/common.py, which this must not import yet


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_INTERRUPTED)


def run() -> None:
    """Run ``lem`` with the arguments of this process."""
    signal.signal(signal.SIGINT, _interrupted)
    from lem.coordinator.cli.main import main

    sys.exit(main())
