"""The property-based fuzz test of lem's whole input surface (issue 15): see
``test_input_surface.py`` for what it checks and how to reproduce a failure.

``FUZZ_SEED`` is the one seed every fuzz test of a pytest run uses: ``LEM_FUZZ_SEED`` when
set, else a fresh random one, printed in pytest's header (without ``-q``), at the end of the
run and in every failure message, and the same in every xdist worker.
Hypothesis keeps its caches under the system's temporary folder, never in the checkout
(it has no example database here: ``database=None``)."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"lem-hypothesis-{os.getuid()}")

FUZZ_SEED = int(os.environ.get("LEM_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# pytest-xdist's workers (``make test`` runs two) start after this, from the run that prints
# the seed: the variable hands them this seed, so the printed one names what they ran.
os.environ["LEM_FUZZ_SEED"] = str(FUZZ_SEED)


def reproduce_line() -> str:
    """How to run the fuzz tests again with this run's seed."""
    return f"LEM_FUZZ_SEED={FUZZ_SEED} pytest tests/fuzz (reproduces this run's examples)"
