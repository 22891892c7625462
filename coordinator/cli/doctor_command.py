"""``lem doctor``: what can run here (``doctor.py``), and the GPU settings a lem that is
gone left changed, restored with ``--restore-gpu-settings`` (``doctor_gpu.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lem.coordinator.cli.common import EXIT_FAILED, store_option
from lem.coordinator.cli.pager import console as _console


@click.command("doctor")
@click.option(
    "--variables",
    "list_variables",
    is_flag=True,
    help="Only list every LEM_* variable lem reads, set or not, with its meaning.",
)
@click.option(
    "--restore-gpu-settings",
    "restore_gpu_settings",
    is_flag=True,
    help="Restore the GPU power limits and clocks that a lem no longer running left "
    "changed (listed in gpu-settings.json beside the store).",
)
@store_option
def doctor_command(list_variables: bool, restore_gpu_settings: bool, store_path: Path) -> None:
    """What can run here: GPUs, NVML, energy counters, GPU settings, worker environments,
    lem variables. Exit status 1 when no backend can run or a GPU setting left changed
    could not be restored."""
    from lem.coordinator.cli.doctor import render_doctor, render_variables

    console = _console()
    if list_variables:
        render_variables(console, every=True)
        return
    usable = render_doctor(console, store_path, restore_gpu_settings)
    render_variables(console)
    if not usable:
        sys.exit(EXIT_FAILED)
