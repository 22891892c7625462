"""Resuming a campaign: which stored campaign, whether its file changed, and what workers
finished that the store never got.

A campaign is resumable while its status is not ``finished`` (running — its coordinator
was killed —, interrupted, or failed). Resuming runs exactly the planned (experiment
position, cycle) pairs that have no stored ok result. Before that, the checkpoint journals
its workers left in ``<store dir>/runs/<campaign id>/journals/`` are read back: a cycle a
worker measured but the coordinator never stored is stored from there, not re-measured.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import structlog

from lem.coordinator.execution.shard_merge import ShardMismatch, merge_shards
from lem.coordinator.planning.campaign import CampaignPlan
from lem.coordinator.store.results_store import Store
from lem.coordinator.store.state import StoredCampaign
from lem.protocol.errors import BadInput
from lem.protocol.journal import read_journal
from lem.protocol.results import Measurement

log = structlog.get_logger("lem.resume")


class ResumeRefused(BadInput):
    """Nothing to resume, or the campaign file changed; ``str`` is the one-line reason."""


def run_dir(store_path: Path, campaign_id: str) -> Path:
    """A campaign's folder of worker journals and logs: ``<store dir>/runs/<id>``."""
    return store_path.parent / "runs" / campaign_id


def source_text(path: Path) -> str | None:
    """The campaign file's text as stored for resuming (None if it cannot be read)."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def same_file(stored_path: str | None, path: Path) -> bool:
    """Whether a campaign stored with ``stored_path`` came from the file at ``path``."""
    if stored_path is None:
        return False
    return Path(stored_path).resolve() == path.resolve()


def newest_unfinished(store: Store, path: Path) -> StoredCampaign:
    """The newest campaign of the file at ``path`` that is not finished."""
    for campaign in store.unfinished_campaigns():
        if same_file(campaign.source_path, path):
            refuse_if_running(campaign)
            return campaign
    raise ResumeRefused(f"{path}: no unfinished campaign of this file in {store.path}")


def resumable(store: Store, campaign_id: str) -> StoredCampaign:
    """The stored campaign ``campaign_id``, if it exists and is not finished."""
    campaign = store.stored_campaign(campaign_id)
    if campaign is None:
        raise ResumeRefused(f"no campaign with id {campaign_id!r} in {store.path}")
    if campaign.status == "finished":
        raise ResumeRefused(f"campaign {campaign_id} is finished: nothing to resume")
    refuse_if_running(campaign)
    return campaign


def refuse_if_running(campaign: StoredCampaign) -> None:
    """Refuse a campaign whose coordinator is still alive on this host (status ``running``
    and its recorded PID runs lem). A coordinator on another host cannot be checked."""
    pid = campaign.coordinator_pid
    if campaign.status != "running" or pid is None or pid == os.getpid():
        return
    if campaign.coordinator_host != socket.gethostname() or not _runs_lem(pid):
        return
    raise ResumeRefused(
        f"campaign {campaign.id} is still being run by lem (pid {pid}): stop it first"
    )


def _runs_lem(pid: int) -> bool:
    """Whether process ``pid`` exists and (where /proc tells) its command line names lem."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"lem" in cmdline


def check_unchanged(campaign: StoredCampaign, plan: CampaignPlan, force: bool) -> None:
    """Refuse a plan whose file's hash differs from the one stored, unless ``force``."""
    if campaign.source_hash == plan.source_hash:
        return
    if not force:
        raise ResumeRefused(
            f"{plan.source_path}: changed since campaign {campaign.id} started (hash "
            f"{campaign.source_hash} → {plan.source_hash}); pass --force to resume anyway"
        )
    log.warning(
        "campaign file changed: resuming anyway (--force)",
        campaign=campaign.id,
        stored_hash=campaign.source_hash,
        file_hash=plan.source_hash,
    )


def ingest_journals(store: Store, campaign_id: str, journal_dir: Path) -> int:
    """Store the journalled results of this campaign that the store lacks; how many.

    Idempotent: a result already stored ok is skipped (``record_measurement`` returns
    False), so reading the same journal twice stores nothing twice. Shards of a
    data-parallel cycle are stored only as a complete attempt's merged measurement; an
    incomplete attempt's shards are left, and the cycle runs again.
    """
    positions = store.experiment_positions(campaign_id)
    ingested = 0
    shard_groups: dict[str, list[Measurement]] = {}
    found: list[tuple[str, Measurement]] = []
    for path in sorted(journal_dir.glob("*.jsonl")):
        if not path.is_file():  # e.g. a directory named like a journal: no results in it
            log.warning("not a journal file, skipped", path=str(path))
            continue
        for measurement in read_journal(path):
            if measurement.experiment_id not in positions:
                continue
            if measurement.shard_count > 1:
                shard_groups.setdefault(measurement.shard_group, []).append(measurement)
            else:
                found.append((path.name, measurement))
    for group, shards in shard_groups.items():
        try:
            found.append((f"data-parallel attempt {group}", merge_shards(shards)))
        except ShardMismatch:
            continue
    for source, measurement in found:
        if store.record_measurement(measurement):
            ingested += 1
            log.info(
                "result recovered from a worker journal",
                journal=source,
                position=positions[measurement.experiment_id],
                cycle=measurement.cycle,
            )
    return ingested
