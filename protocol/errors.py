"""lem's errors: one root, so a caller can catch whatever lem raises on purpose and the
command line can turn each kind into an exit status in one place
(``coordinator/cli/common.py: exit_status``).

- ``LemError``: something failed while lem did its work (a worker, NVML, the store's
  disk); where one reaches the command line, ``lem: error: …`` and exit 1.
- ``BadInput``: what the user gave cannot be used — a campaign or experiment file, an
  option, a campaign id, a store path; one line on stderr, exit 2, nothing written.

Each error keeps its own module and name (``ConfigError`` in ``planning/config_loader.py``,
``BackendError`` in ``workers/engines/base.py``, …) and says there which of these it is;
``str(exc)`` is the one line a person reads. ``tests/test_errors.py`` fails when a class
of lem's raises outside this tree.
"""

from __future__ import annotations


class LemError(Exception):
    """The root of every error lem raises on purpose; ``str(exc)`` says what went wrong."""


class BadInput(LemError):
    """The user's input cannot be used; ``str(exc)`` names it and the problem (exit 2)."""
