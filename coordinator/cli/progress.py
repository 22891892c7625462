"""Campaign progress: cycles done of total, ETA, the running cycle's phase and GPU power.

``CampaignProgress`` is the model. The runner calls its ``on_progress`` at each worker
phase and its ``on_cycle_done`` after each stored cycle; the latter also logs one
``campaign progress`` event (done, total, failed, eta_s), so ``--log-json`` and piped
output carry progress as log lines. ``live_display`` draws the model with rich on stderr
(stdout stays free for the result tables) and is used only where ``wants_live`` says so:
both streams a terminal, neither ``--quiet`` nor ``--log-json``. While it draws, info log
lines go to the campaign's log file only (``logs.terminal_info_hidden``; ``-v`` shows them).

GPU power is read through NVML from the coordinator, only while the live display draws
(at most every ``POWER_READ_INTERVAL_S``), and never raises: an unreadable power is shown
as "power n/a", never as 0 W.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from lem.coordinator.cli.logs import terminal_info_hidden

if TYPE_CHECKING:
    from lem.coordinator.execution.supervisor import WorkerHandle
    from lem.coordinator.planning.campaign import PlannedExperiment
    from lem.protocol.devices.nvml import EnergyCounters
    from lem.protocol.messages import Progress as ProgressEvent

log = structlog.get_logger("lem.campaign")

POWER_READ_INTERVAL_S = 0.5  # at most 2 Hz of NVML power reads
REFRESH_PER_S = 2.0

Clock = Callable[[], float]
"""Monotonic seconds."""
PowerReader = Callable[[tuple[str, ...]], float | None]
"""Total power in W of the GPUs with these UUIDs, or None when unreadable."""


def wants_live(log_json: bool, quiet: bool) -> bool:
    """Whether to draw the live display: not --quiet, not --log-json, stdout and stderr TTYs."""
    return not (log_json or quiet) and sys.stdout.isatty() and sys.stderr.isatty()


def format_duration(duration_s: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a duration in seconds, rounded up."""
    total_s = max(0, int(-(-duration_s // 1)))
    hours, rest_s = divmod(total_s, 3600)
    minutes, seconds = divmod(rest_s, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class NvmlPowerReader:
    """Sums NVML's power readings (W) of a set of GPUs; None when NVML or a GPU cannot say.

    Opens one NVML session per GPU set on first use and keeps it until ``close``. Never
    raises: a read must not stop a campaign.
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[str, ...], EnergyCounters | None] = {}
        self._lock = threading.Lock()

    def __call__(self, gpu_uuids: tuple[str, ...]) -> float | None:
        if not gpu_uuids:
            return None
        with self._lock:
            try:
                if gpu_uuids not in self._counters:
                    self._counters[gpu_uuids] = _open_counters(gpu_uuids)
                counters = self._counters[gpu_uuids]
                if counters is None:
                    return None
                readings_w = [counters.read_power_w(uuid) for uuid in gpu_uuids]
            except Exception:  # any NVML surprise: show "n/a", keep the campaign going
                return None
        if any(r is None for r in readings_w):
            return None  # a partial sum would understate the power
        return sum(r for r in readings_w if r is not None)

    def close(self) -> None:
        """Close every NVML session this reader opened."""
        with self._lock:
            for counters in self._counters.values():
                if counters is not None:
                    with suppress(Exception):
                        counters.close()
            self._counters.clear()


def _open_counters(gpu_uuids: tuple[str, ...]) -> EnergyCounters | None:
    try:
        from lem.protocol.devices.nvml import EnergyCounters

        return EnergyCounters(list(gpu_uuids))
    except Exception:  # NvmlUnavailable, or the NVML library itself missing or broken
        return None


@dataclass(frozen=True)
class _Current:
    """The cycle running now, as the last worker event described it."""

    experiment: str
    cycle: int
    phase: str
    detail: str
    gpu_uuids: tuple[str, ...]
    node: str | None = None  # a cluster node's host (None on this host)


class CampaignProgress:
    """Progress of one campaign: what is done, what runs now and how long the rest takes.

    The ETA is the mean duration of the finished cycles (measured or failed) times the
    cycles left; before any cycle finished it is unknown. ``clock`` gives monotonic seconds
    and ``power_reader`` GPU power (W); both are injectable for tests. Safe to read from
    a display thread while the runner's thread updates it.
    """

    def __init__(
        self,
        campaign: str,
        experiments: int,
        cycles: int,
        clock: Clock = time.monotonic,
        power_reader: PowerReader | None = None,
    ) -> None:
        self.campaign = campaign
        self.cycles_per_experiment = cycles
        self.total_cycles = experiments * cycles
        self.done_cycles = 0
        self.failed_cycles = 0
        self._finished_s = 0.0  # summed duration of the finished cycles
        self._clock = clock
        self._power_reader = power_reader
        self._current: _Current | None = None
        self._nodes: dict[str, _Current] = {}  # on a cluster: the last event of each node
        self._power_w: float | None = None
        self._power_read_at_s: float | None = None
        self._lock = threading.Lock()
        # called at each phase and after each finished cycle (the display redraws then)
        self.listener: Callable[[], None] | None = None

    # ---- runner hooks (the runner's thread) -----------------------------------------

    def on_progress(
        self, experiment: PlannedExperiment, cycle: int, event: ProgressEvent, worker: WorkerHandle
    ) -> None:
        """The runner's ``on_progress`` hook: a worker reported a phase of a cycle."""
        with self._lock:
            self._current = _Current(
                experiment.name,
                cycle,
                event.phase,
                event.detail,
                tuple(worker.spec.assignment.gpu_uuids),
                getattr(worker.process, "node", None),
            )
            if self._current.node is not None:
                self._nodes[self._current.node] = self._current
        if self.listener is not None:
            self.listener()

    def on_cycle_done(
        self, experiment: PlannedExperiment, cycle: int, ok: bool, duration_s: float
    ) -> None:
        """The runner's ``on_cycle_done`` hook: count the cycle and log a progress event."""
        with self._lock:
            self.done_cycles += 1
            self.failed_cycles += 0 if ok else 1
            self._finished_s += max(0.0, duration_s)
            current = self._current
            gpu_uuids = current.gpu_uuids if current is not None else ()
            self._current = _Current(
                experiment.name, cycle, "measured" if ok else "failed", "", gpu_uuids
            )
            eta_s = self._eta_s_locked()
            done, failed = self.done_cycles, self.failed_cycles
        log.info(
            "campaign progress",
            done=done,
            total=self.total_cycles,
            failed=failed,
            eta_s=round(eta_s, 1) if eta_s is not None else None,
            experiment=experiment.name,
            cycle=cycle,
            ok=ok,
            duration_s=round(duration_s, 3),
        )
        if self.listener is not None:
            self.listener()

    # ---- what the display shows --------------------------------------------------------

    def mean_cycle_s(self) -> float | None:
        """Mean duration (s) of the finished cycles, or None before the first one."""
        with self._lock:
            return self._finished_s / self.done_cycles if self.done_cycles else None

    def _eta_s_locked(self) -> float | None:
        if not self.done_cycles:
            return None
        left = max(0, self.total_cycles - self.done_cycles)
        return self._finished_s / self.done_cycles * left

    def eta_s(self) -> float | None:
        """Seconds until the last cycle finishes, or None while no cycle has finished."""
        with self._lock:
            return self._eta_s_locked()

    def eta_text(self) -> str:
        """``ETA 1:05`` or ``ETA unknown``."""
        eta_s = self.eta_s()
        return "ETA unknown" if eta_s is None else f"ETA {format_duration(eta_s)}"

    def phase_text(self) -> str:
        """Which experiment and cycle (1-based, of the experiment's cycles) runs, in which
        phase, e.g. ``bs4 · cycle 2/3 · warmup (2 batches)``."""
        with self._lock:
            current = self._current
            nodes = dict(self._nodes)
        if current is None:
            return "waiting for the first worker"
        if len(nodes) > 1:  # a cluster: what each node runs
            return " | ".join(
                f"{node}: {c.experiment} · cycle {c.cycle + 1} · {c.phase}"
                for node, c in sorted(nodes.items())
            )
        text = (
            f"{current.experiment} · cycle {current.cycle + 1}/{self.cycles_per_experiment}"
            f" · {current.phase}"
        )
        if current.node is not None:
            text = f"{current.node}: {text}"
        return f"{text} ({current.detail})" if current.detail else text

    def power_w(self) -> float | None:
        """Total power (W) of the current cycle's GPUs, read at most every
        ``POWER_READ_INTERVAL_S``; None on CPU, without NVML or when unreadable."""
        with self._lock:
            current = self._current
            if current is None or not current.gpu_uuids or self._power_reader is None:
                return None
            now_s = self._clock()
            last_s = self._power_read_at_s
            if last_s is not None and now_s - last_s < POWER_READ_INTERVAL_S:
                return self._power_w
            self._power_read_at_s = now_s
            reader = self._power_reader
        try:
            power_w = reader(current.gpu_uuids)
        except Exception:  # a reader must never stop the campaign
            power_w = None
        with self._lock:
            self._power_w = power_w
        return power_w

    def power_text(self) -> str:
        """``power 312 W`` (summed over the cycle's GPUs) or ``power n/a``."""
        power_w = self.power_w()
        if power_w is None:
            return "power n/a"
        with self._lock:
            current = self._current
        gpus = len(current.gpu_uuids) if current is not None else 0
        suffix = f" ({gpus} GPUs)" if gpus > 1 else ""
        return f"power {power_w:.0f} W{suffix}"


class _ModelColumn(ProgressColumn):
    """A progress column whose text comes from the model at each refresh."""

    def __init__(self, text: Callable[[], str], style: str = "") -> None:
        super().__init__()
        self._text = text
        self._style = style

    def render(self, task: Task) -> Text:
        return Text(self._text(), style=self._style)


class _StatusLine:
    """The line under the bar: current experiment, cycle, phase and GPU power."""

    def __init__(self, model: CampaignProgress) -> None:
        self._model = model

    def __rich__(self) -> Text:
        return Text.assemble(
            (self._model.phase_text(), "cyan"), "  ", (self._model.power_text(), "yellow")
        )


@contextmanager
def live_display(model: CampaignProgress, console: Console | None = None) -> Iterator[None]:
    """Draw ``model`` on stderr (or ``console``) until the block ends; the last frame stays.

    Log lines written meanwhile are printed above the display, not through it; on a
    terminal only warnings and errors, unless ``-v``: info lines (loading, warmup,
    measuring, ...) go to the campaign's log file alone, and the display shows the phase.
    """
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cycles"),
        TimeElapsedColumn(),
        _ModelColumn(model.eta_text),
        console=console,
    )
    task = progress.add_task(model.campaign, total=model.total_cycles)
    live = Live(
        Group(progress, _StatusLine(model)),
        console=console,
        refresh_per_second=REFRESH_PER_S,
        transient=False,
        redirect_stdout=True,
        redirect_stderr=True,
    )

    def redraw() -> None:  # now, not at the next tick: a short phase is shown too
        progress.update(task, completed=model.done_cycles)
        live.refresh()

    with live, terminal_info_hidden(console.is_terminal):
        # lem's log lines are written to sys.stderr as it is at each line: rich's proxy
        # while the display draws, so they scroll above it instead of tearing it.
        model.listener = redraw
        try:
            yield
        finally:
            model.listener = None
            live.refresh()
