"""What ``lem.load_results`` does (the top-level ``lem`` package, api/, imports this when
it is called): the rows of a store's campaigns as a DataFrame, read one experiment at a time
(table.py's ``ResultSet``) and built column-wise (formats.py). It imports only what reading
needs (not the CLI, the planner or logging), so that a fresh process is quick."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lem.coordinator.results.columns import LEVELS, Level
from lem.coordinator.results.export import dataframe
from lem.coordinator.results.table import ResultSet

if TYPE_CHECKING:
    import pandas as pd


def load_results(
    store: str | Path,
    campaign_ids: str | Sequence[str] | None = None,
    level: Level = "measurement",
) -> pd.DataFrame:
    """The results in ``store`` as a DataFrame with exactly the export's columns.

    ``level="measurement"``: one row per stored cycle (ok and failed); ``"experiment"``:
    one row per experiment with statistics over its ok cycles. ``campaign_ids``: ids or
    unique id prefixes (None: every campaign). Units are in the column names
    (``lem docs results``); null is ``<NA>``, never 0. Raises ``StoreError`` for a missing
    store or an unknown campaign.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    wanted = [campaign_ids] if isinstance(campaign_ids, str) else campaign_ids
    with ResultSet(store, wanted) as results:
        return dataframe(results, level)
