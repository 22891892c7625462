"""lem's Python API: ``lem.load_results(store)`` and ``lem.run(config)`` (``lem docs results``).

Importing ``lem`` is cheap: the functions import the coordinator (and pandas) when called.
``lem.protocol``, ``lem.coordinator`` and ``lem.workers`` are subpackages mapped from the
repository's top-level folders (pyproject.toml); ``lem.envs`` (the engine environments'
locks) and ``lem.docs`` (the user documentation) are data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

    from lem.coordinator.results.columns import Level
    from lem.protocol.config import ExperimentConfig

__all__ = ["load_results", "run"]

DEFAULT_STORE = Path("lem-results") / "lem.db"


def load_results(
    store: str | Path = DEFAULT_STORE,
    campaign_ids: str | Sequence[str] | None = None,
    level: Level = "measurement",
) -> pd.DataFrame:
    """The results in ``store`` as a pandas DataFrame with exactly the columns of
    ``lem results export`` (units in the names; null is ``<NA>``, never 0).

    ``level="measurement"``: one row per stored cycle, ok and failed; ``"experiment"``: one
    row per experiment, statistics over its ok cycles. ``campaign_ids``: ids or unique id
    prefixes (None: every campaign). Needs pandas (``pip install 'lem[analysis]'``).
    """
    from lem.coordinator.results.loading import load_results as load

    return load(store, campaign_ids, level)


def run(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    store: str | Path = DEFAULT_STORE,
    **options: Any,
) -> str:
    """Run a campaign or one experiment in this process, as ``lem campaign`` / ``lem run``
    do, and return its campaign id (``lem.load_results(store, id)`` gives its rows).

    ``config``: a campaign or experiment YAML file, a mapping of either, or an
    ``ExperimentConfig``. Options: ``cycles`` (for one experiment; default 1), ``gpus``
    (a set of GPU indices), ``max_parallel``, ``max_attempts``.
    """
    from lem.coordinator.results.python_api import run as run_campaign

    return run_campaign(config, store, **options)
