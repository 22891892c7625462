"""What ``lem.run`` does (the top-level ``lem`` package, api/, imports this lazily so that
``import lem`` stays cheap; ``lem.load_results`` is loading.py, which imports less).

``run`` runs a campaign in this process as ``lem campaign`` / ``lem run`` do (workers are
still their own processes) and returns the campaign id; ``load_results(store, [id])`` then
gives its rows. A config given as a mapping or an ``ExperimentConfig`` is written as YAML
to ``<store folder>/python-api/<name>-<hash>.yaml`` first: that file is the campaign's
source (its provenance label, and what ``lem resume`` reads).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import structlog
import yaml

from lem.coordinator.cli.common import DEFAULT_STORE
from lem.coordinator.planning.campaign import CampaignPlan, plan_campaign, single_experiment_plan
from lem.coordinator.planning.config_loader import ConfigError, load_experiment
from lem.coordinator.planning.provenance import dotted_leaves
from lem.coordinator.results.loading import load_results
from lem.protocol.config import ExperimentConfig

log = structlog.get_logger("lem.api")

# Keys only a campaign file has (an experiment file has none of them).
CAMPAIGN_KEYS = frozenset({"experiment", "experiments", "grid", "zip", "backends", "cycles"})
__all__ = ["load_results", "run"]


def run(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    store: str | Path = DEFAULT_STORE,
    *,
    cycles: int = 1,
    gpus: set[int] | None = None,
    max_parallel: int | None = None,
    max_attempts: int | None = None,
) -> str:
    """Run a campaign (or one experiment, ``cycles`` times) and return its campaign id.

    ``config``: a campaign or experiment YAML file, a mapping of either, or an
    ``ExperimentConfig``. A campaign's own ``cycles`` wins over the argument. Failed cycles
    are stored as failed (``status`` column) and logged; an interrupt (Ctrl-C) keeps what
    was stored and raises ``KeyboardInterrupt`` naming the campaign. Raises ``ConfigError``
    for a bad config, ``ValueError`` for ``cycles`` < 1.
    """
    from lem.coordinator.execution.runner import CampaignRunner, RunOptions
    from lem.coordinator.planning.dispatch_plan import assign_all
    from lem.coordinator.store.results_store import Store

    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    store_path = Path(store)
    plan = _plan(config, store_path, cycles)
    options = RunOptions(
        store_path=store_path,
        allowed_gpu_indices=gpus,
        max_attempts=plan.max_attempts if max_attempts is None else max_attempts,
        max_parallel=max_parallel,
    )
    assign_all(plan, gpus)  # impossible GPU requests fail before anything is stored
    with Store(store_path) as opened:
        outcome = CampaignRunner(plan, opened, options).run()
    if outcome.interrupted:
        raise KeyboardInterrupt(f"campaign {outcome.campaign_id} interrupted; results kept")
    for name, cycle, reason in outcome.failures:
        log.warning(
            "cycle failed",
            campaign=outcome.campaign_id,
            experiment=name,
            cycle=cycle,
            reason=reason,
        )
    return outcome.campaign_id


def _plan(
    config: str | Path | Mapping[str, Any] | ExperimentConfig, store_path: Path, cycles: int
) -> CampaignPlan:
    if isinstance(config, str | Path):
        return _plan_file(Path(config), cycles)
    if isinstance(config, ExperimentConfig):
        mapping = _non_default(config)
    elif isinstance(config, Mapping):
        mapping = dict(config)
    else:
        raise TypeError(
            f"config must be a path, a mapping or an ExperimentConfig, got {type(config).__name__}"
        )
    text = yaml.safe_dump(mapping, sort_keys=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    name = str(
        mapping.get("name") or ("campaign" if CAMPAIGN_KEYS & mapping.keys() else "experiment")
    )
    path = store_path.parent / "python-api" / f"{_safe(name)}-{digest}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if CAMPAIGN_KEYS & mapping.keys():
        return plan_campaign(path)
    return single_experiment_plan(path, load_experiment(path), cycles)


def _plan_file(path: Path, cycles: int) -> CampaignPlan:
    """A campaign file's plan, or an experiment file's (as ``lem run``) when it is not one."""
    try:
        return plan_campaign(path)
    except ConfigError as campaign_error:
        try:
            config = load_experiment(path)
        except ConfigError:
            raise campaign_error from None
        return single_experiment_plan(path, config, cycles)


def _non_default(config: ExperimentConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from their defaults, as a nested mapping (so
    provenance still says ``default`` for the rest)."""
    defaults = dotted_leaves(msgspec.to_builtins(ExperimentConfig()))
    mapping: dict[str, Any] = {}
    for dotted, value in dotted_leaves(msgspec.to_builtins(config)).items():
        if dotted in defaults and defaults[dotted] == value:
            continue
        *parents, leaf = dotted.split(".")
        node = mapping
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return mapping


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
