"""The ``lem`` command line. Exit status: 0 ok, 1 some cycles failed, 2 bad input, 130 interrupted.

Bad input prints exactly one line (file, field, problem) to stderr — no traceback — and
writes nothing to the store: commands raise ``LemError``s (``protocol/errors.py``), which
the ``lem`` group turns into that line and their kind's exit status (``common.py``).
``lem campaign FILE --resume`` and ``lem resume ID`` go on with an unfinished campaign
(resume.py); nothing to resume, or a changed campaign file without ``--force``, is bad
input too.
"""

from __future__ import annotations

import itertools
import sys
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from lem.coordinator.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    LemGroup,
    attempts_option,
    bad_input,
    cluster_option,
    endpoint_option,
    exit_status,
    force_option,
    gpus_option,
    parallel_option,
    path_exists,
    printable,
    store_option,
)
from lem.coordinator.cli.config_commands import config_group, parse_overrides, set_option
from lem.coordinator.cli.docs_command import docs_command
from lem.coordinator.cli.doctor_command import doctor_command
from lem.coordinator.cli.env_commands import env_group
from lem.coordinator.cli.logs import CAMPAIGN_LOG, configure_logging, log_file
from lem.coordinator.cli.pager import console as _console
from lem.coordinator.cli.results_commands import compare_command, export_command, show_command
from lem.coordinator.planning.campaign import CampaignPlan, plan_campaign, single_experiment_plan
from lem.coordinator.planning.config_loader import ConfigError, load_experiment
from lem.coordinator.report.command import report_command
from lem.protocol.errors import LemError

if TYPE_CHECKING:
    from lem.coordinator.store.state import StoredCampaign


def _parse_gpus(value: str | None) -> set[int] | None:
    if value is None:
        return None
    try:
        return {int(part) for part in value.split(",") if part.strip()}
    except ValueError:
        bad_input(f"--gpus: expected comma-separated GPU indices like 0,1, got {value!r}")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``lem --version``: the installed distribution's version (``0+unknown`` when lem runs
    from a source tree that was never installed). Read only when asked: the metadata
    search costs every other command's start."""
    if not value or ctx.resilient_parsing:
        return
    from lem.protocol.version import lem_version

    click.echo(f"lem {lem_version()}")
    ctx.exit()


@click.group(cls=LemGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print lem's version and exit.",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object a line (stderr).")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Debug logging; on a terminal, every log line above the live display too.",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(log_json: bool, verbose: bool, quiet: bool) -> None:
    """lem: how much energy, time and latency an LLM costs per token — measured truthfully."""
    configure_logging(log_json, verbose, quiet)


def _execute(
    plan: CampaignPlan,
    store_path: Path,
    gpus: str | None,
    endpoint: str | None,
    max_attempts: int | None = None,
    resume: StoredCampaign | None = None,
    max_parallel: int | None = None,
    cluster: str | None = None,
) -> None:
    from lem.coordinator.cli.progress import (
        CampaignProgress,
        NvmlPowerReader,
        live_display,
        wants_live,
    )
    from lem.coordinator.execution.runner import CampaignRunner, RunOptions
    from lem.coordinator.results.view import render_campaign_detail
    from lem.coordinator.store.results_store import Store

    options = RunOptions(
        store_path=store_path,
        allowed_gpu_indices=_parse_gpus(gpus),
        endpoint=endpoint,
        max_attempts=plan.max_attempts if max_attempts is None else max_attempts,
        max_parallel=max_parallel,
        cluster=cluster or plan.cluster,
    )
    from lem.coordinator.execution.cluster_run import join_checked
    from lem.coordinator.execution.gpu_control import plan_problem, restore_leftovers
    from lem.coordinator.planning.dispatch_plan import assign_all

    for line in restore_leftovers(store_path):  # a killed coordinator's GPU settings
        click.echo(f"lem: {line}", err=True)
    # Impossible GPU requests or settings, an unreachable cluster: bad input, nothing stored.
    joined = join_checked(plan, options.cluster) if options.cluster else None
    if joined is None:
        problem = plan_problem(plan, assign_all(plan, options.allowed_gpu_indices))
        if problem is not None:
            bad_input(f"{plan.source_path}: {problem}")
    from lem.coordinator.execution.environments import check_explicit_python

    for backend in dict.fromkeys(exp.config.backend for exp in plan.experiments):
        check_explicit_python(backend)  # an unusable LEM_<BACKEND>_PYTHON: bad input, unstored
    flags = click.get_current_context().find_root().params
    live = wants_live(flags["log_json"], flags["quiet"])
    power = NvmlPowerReader() if live else None
    progress = CampaignProgress(plan.name, len(plan.experiments), plan.cycles, power_reader=power)
    with ExitStack() as logs:
        if joined is not None:
            logs.callback(joined.close)
        store = logs.enter_context(Store(store_path))

        def open_log(_campaign_id: str, run_folder: Path) -> None:
            logs.enter_context(log_file(run_folder / CAMPAIGN_LOG))

        runner = CampaignRunner(
            plan,
            store,
            options,
            on_progress=progress.on_progress,
            on_cycle_done=progress.on_cycle_done,
            on_started=open_log,
            cluster=joined,
        )
        try:
            with live_display(progress) if live else nullcontext():
                outcome = runner.run(resume)
        except Exception as exc:
            if runner.stopped_by is None:  # the campaign was not stopped: nothing stored
                raise
            _stopped_by_error(runner.campaign_id, runner.stopped_by, exc)
        finally:
            if power is not None:
                power.close()
        console = _console()
        for renderable in render_campaign_detail(store.campaign_detail(outcome.campaign_id)):
            console.print(renderable)
    if outcome.interrupted:
        click.echo(
            f"lem: campaign {outcome.campaign_id} interrupted; stored results are kept "
            f"(go on with: lem resume {outcome.campaign_id})",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if outcome.skipped:
        click.echo(
            f"lem: {len(outcome.skipped)} load-sweep cycle(s) not run in campaign "
            f"{outcome.campaign_id}:",
            err=True,
        )
        for name, cycle, reason in outcome.skipped:
            click.echo(f"  {printable(name)} cycle {cycle}: {printable(reason)}", err=True)
    if outcome.failures:
        click.echo(
            f"lem: {len(outcome.failures)} cycle(s) failed in campaign {outcome.campaign_id}:",
            err=True,
        )
        for name, cycle, reason in outcome.failures:
            click.echo(f"  {printable(name)} cycle {cycle}: {printable(reason)}", err=True)
        sys.exit(EXIT_FAILED)


def _stopped_by_error(campaign_id: str | None, error: str, exc: Exception) -> NoReturn:
    """An unexpected error stopped the campaign, stored ``failed`` with ``error``: one line
    saying it is resumable (the traceback goes to the debug log), exit 1 (2 for bad input)."""
    import structlog

    structlog.get_logger("lem").debug("campaign stopped", exc_info=exc)
    click.echo(
        f"lem: error: campaign {campaign_id} stopped by an unexpected error: "
        f"{printable(error)}; stored results are kept and it is resumable "
        f"(go on with: lem resume {campaign_id})",
        err=True,
    )
    sys.exit(exit_status(exc) if isinstance(exc, LemError) else EXIT_FAILED)


@main.command("run")
@click.argument("experiment_file", type=click.Path(path_type=Path))
@click.option("--cycles", default=1, show_default=True, type=click.IntRange(min=1))
@store_option
@gpus_option
@parallel_option
@endpoint_option
def run_command(
    experiment_file: Path,
    cycles: int,
    store_path: Path,
    gpus: str | None,
    max_parallel: int | None,
    endpoint: str | None,
) -> None:
    """Measure one experiment described by EXPERIMENT_FILE."""
    config = load_experiment(experiment_file)
    plan = single_experiment_plan(experiment_file, config, cycles)
    _execute(plan, store_path, gpus, endpoint, max_parallel=max_parallel)


@main.command("campaign")
@click.argument("campaign_file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the planned experiments; run nothing.")
@click.option(
    "--show",
    "show_count",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="With --dry-run: how many experiments to list.",
)
@set_option
@click.option(
    "--resume",
    "resume_newest",
    is_flag=True,
    help="Go on with the newest unfinished campaign of this file: run what has no ok result.",
)
@force_option
@attempts_option
@store_option
@gpus_option
@parallel_option
@endpoint_option
@cluster_option
def campaign_command(
    campaign_file: Path,
    dry_run: bool,
    show_count: int,
    overrides: tuple[str, ...],
    resume_newest: bool,
    force: bool,
    max_attempts: int | None,
    store_path: Path,
    gpus: str | None,
    max_parallel: int | None,
    endpoint: str | None,
    cluster: str | None,
) -> None:
    """Run a campaign: a grid of experiments × cycles from CAMPAIGN_FILE."""
    plan = plan_campaign(campaign_file, parse_overrides(overrides))
    if dry_run:
        total = len(plan.experiments)
        click.echo(f"{printable(plan.name)}: {total} experiment(s) × {plan.cycles} cycle(s)")
        for exp in itertools.islice(plan.experiments, show_count):
            click.echo(f"  {exp.position}: {printable(exp.name)}")
        if total > show_count:
            click.echo(f"  ... {total - show_count} more (--show N lists more)")
        return
    resume = None
    if resume_newest:
        from lem.coordinator.execution.resume import check_unchanged, newest_unfinished
        from lem.coordinator.store.results_store import Store

        if not path_exists(store_path):
            bad_input(f"{campaign_file}: nothing to resume: no result store at {store_path}")
        with Store(store_path) as store:
            resume = newest_unfinished(store, campaign_file)
            check_unchanged(resume, plan, force)
    _execute(plan, store_path, gpus, endpoint, max_attempts, resume, max_parallel, cluster)


@main.command("resume")
@click.argument("campaign_id")
@force_option
@attempts_option
@store_option
@gpus_option
@parallel_option
@endpoint_option
@cluster_option
def resume_command(
    campaign_id: str,
    force: bool,
    max_attempts: int | None,
    store_path: Path,
    gpus: str | None,
    max_parallel: int | None,
    endpoint: str | None,
    cluster: str | None,
) -> None:
    """Go on with campaign CAMPAIGN_ID: run its cycles that have no ok result.

    The plan is read again from the campaign's file; if that file is gone, from the text
    stored with the campaign.
    """
    from lem.coordinator.execution.resume import check_unchanged, resumable, run_dir
    from lem.coordinator.store.results_store import Store

    if not path_exists(store_path):
        bad_input(f"{store_path}: no result store here (run a campaign first, or pass --store)")
    with Store(store_path) as store:
        resume = resumable(store, campaign_id)
    source = Path(resume.source_path or "")
    if not source.is_file() and resume.source_text is not None:
        source = run_dir(store_path, campaign_id) / "campaign-source.yaml"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(resume.source_text)
    plan = _plan_for_resume(source, resume.cycles)
    check_unchanged(resume, plan, force)
    _execute(plan, store_path, gpus, endpoint, max_attempts, resume, max_parallel, cluster)


def _plan_for_resume(source: Path, cycles: int) -> CampaignPlan:
    """The plan of a stored campaign's file: a campaign file, or the experiment file of a
    ``lem run`` (with the stored cycles). Raises the campaign file's ``ConfigError``."""
    try:
        return plan_campaign(source)
    except ConfigError as campaign_error:
        try:
            config = load_experiment(source)
        except ConfigError:
            raise campaign_error from None
        return single_experiment_plan(source, config, cycles)


main.add_command(config_group)
main.add_command(env_group)
main.add_command(report_command)


@main.group("results")
def results_group() -> None:
    """Look at stored results."""


@results_group.command("list")
@store_option
def results_list(store_path: Path) -> None:
    """One line per campaign."""
    from lem.coordinator.results.view import render_campaign_list
    from lem.coordinator.store.results_store import Store

    if not path_exists(store_path):
        bad_input(f"{store_path}: no result store here (run a campaign first, or pass --store)")
    with Store.read_only(store_path) as store:
        console = _console()
        for renderable in render_campaign_list(store.list_campaigns()):
            console.print(renderable)


results_group.add_command(show_command)


results_group.add_command(export_command)
main.add_command(compare_command)
main.add_command(docs_command)
main.add_command(doctor_command)
