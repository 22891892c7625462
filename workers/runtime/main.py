"""The worker process: handshake, backend initialisation, then serve ``Run`` commands.

Started by the coordinator as ``python -m lem.workers --endpoint … --worker-id …`` with
the interpreter of the backend's environment and ``CUDA_VISIBLE_DEVICES`` already set
(and, for a tcp:// endpoint, the campaign's CURVE keys: ``protocol/curve.py``).
The hello goes out before any engine library is imported. Every finished measurement is
journalled (fsync) before its ``Result`` is sent.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import platform
import queue
import signal
import socket
import sys
import time
import traceback
from importlib import import_module
from pathlib import Path
from typing import cast, get_args

from lem.protocol.curve import CurveError, take_keys
from lem.protocol.devices.counter_period import detect_update_periods, slowest_period_s
from lem.protocol.devices.nvml import EnergyCounters, NvmlUnavailable, inventory
from lem.protocol.devices.rapl import discover_rapl_zones
from lem.protocol.engines.registry import ENGINES
from lem.protocol.env_locks import environment_facts, lock_status
from lem.protocol.journal import Journal
from lem.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Error,
    Hello,
    Phase,
    Progress,
    Ready,
    Refuse,
    Result,
    Run,
    Shutdown,
)
from lem.protocol.results import Environment
from lem.protocol.variables import TELEMETRY_INTERVAL_S, WORKER_BACKEND
from lem.protocol.version import lem_version
from lem.workers.engines.base import Backend, CudaVisibilityError, RetryableError
from lem.workers.metering.idle_power import BaselineKeeper
from lem.workers.metering.telemetry import Sampler, TelemetryUnavailable
from lem.workers.runtime.channel import WorkerChannel
from lem.workers.runtime.host_facts import host_facts
from lem.workers.runtime.preflight import preflight
from lem.workers.runtime.versions import distribution_versions
from lem.workers.workload.measure import MeasurementContext, measure

log = logging.getLogger("lem.worker")

# The backends a worker runs: the registered engines (``lem.protocol.engines``), each
# loaded from its spec's entry point.
BACKENDS = {engine.name: engine for engine in ENGINES}
_PR_SET_PDEATHSIG = 1
PHASES = get_args(Phase)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat deadline still applies
        pass
    if parent_pid and os.getppid() != parent_pid:
        sys.exit(3)  # the parent died before we could arm the signal


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lem.workers")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--backend", required=True, choices=sorted(BACKENDS))
    parser.add_argument("--journal", required=True, type=Path)
    parser.add_argument("--gpus", default="", help="comma-separated NVML GPU UUIDs given")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--handshake-timeout-s", type=float, default=60.0)
    parser.add_argument("--protocol-version", type=int, default=PROTOCOL_VERSION)
    return parser.parse_args(argv)


def _load_backend(name: str) -> Backend:
    """The backend class for ``name`` (its engine's entry point); ``LEM_WORKER_BACKEND=
    module:Class`` replaces it (a test seam: see ``lem.workers.engines.sleep``)."""
    module_name, class_name = BACKENDS[name].entry_point_parts()
    override = WORKER_BACKEND.get()
    if override:
        module_name, _, class_name = override.partition(":")
    backend: Backend = getattr(import_module(module_name), class_name)()
    return backend


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.worker_id} %(name)s %(levelname)s %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when we stop
    try:  # first: nothing this process starts may inherit the secret key
        curve = take_keys()
    except CurveError as exc:
        log.error("%s", exc)
        return 2
    _die_with_parent(args.parent_pid)
    gpu_uuids = [u for u in args.gpus.split(",") if u]
    inv = inventory()
    hello = Hello(
        protocol_version=args.protocol_version,
        worker_id=args.worker_id,
        pid=os.getpid(),
        backend=args.backend,
        python_executable=sys.executable,
        python_version=platform.python_version(),
        lem_version=lem_version(),
        packages=distribution_versions(
            ["msgspec", "pyzmq", BACKENDS[args.backend].environment.worker_distribution]
        ),
        visible_gpus=[g for g in inv.gpus if g.uuid in gpu_uuids],
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    try:
        channel = WorkerChannel(args.endpoint, args.worker_id, curve=curve)
    except CurveError as exc:
        log.error("%s", exc)
        return 2
    channel.start(hello)
    try:
        nvml_uuids = None if inv.unavailable_reason else {g.uuid for g in inv.gpus}
        return _serve(
            args, channel, gpu_uuids, inv.driver_version, inv.unavailable_reason, nvml_uuids
        )
    except Exception as exc:
        log.exception("worker failed")
        channel.send(
            Error(
                worker_id=args.worker_id,
                experiment_id=channel.busy_experiment_id,
                kind=type(exc).__name__,
                message=str(exc),
                traceback=traceback.format_exc(),
                fatal=True,
            )
        )
        return 1
    finally:
        channel.close()


def _serve(
    args: argparse.Namespace,
    channel: WorkerChannel,
    gpu_uuids: list[str],
    driver_version: str | None,
    nvml_reason: str | None,
    nvml_uuids: set[str] | None = None,
) -> int:
    try:
        answer = channel.commands.get(timeout=args.handshake_timeout_s)
    except queue.Empty:
        log.error("no answer to hello within %.0f s", args.handshake_timeout_s)
        return 2
    if isinstance(answer, Refuse):
        log.error("coordinator refused this worker: %s", answer.reason)
        return 2
    if not isinstance(answer, Accept):
        raise RuntimeError(f"expected accept after hello, got {type(answer).__name__}")
    started_s = time.perf_counter()
    # Before any engine loads: CUDA untouched, and the GPUs visible are those given.
    preflight(gpu_uuids, os.environ.get("CUDA_VISIBLE_DEVICES"), nvml_uuids)
    backend = _load_backend(args.backend)
    report = backend.initialise(gpu_uuids)  # CudaVisibilityError is fatal: main() reports it
    environment = Environment(
        hostname=socket.gethostname(),
        python_version=platform.python_version(),
        lem_version=lem_version(),
        protocol_version=PROTOCOL_VERSION,
        backend=args.backend,
        backend_version=report.backend_version,
        packages=report.packages,
        device=report.device,
        gpus=[g for g in inventory().gpus if g.uuid in gpu_uuids] if gpu_uuids else [],
        driver_version=driver_version,
        cuda_version=report.cuda_version,
        nvml_unavailable_reason=nvml_reason,
        engine_lock=lock_status(args.backend, environment_facts()),
        **host_facts(),
    )
    counters, energy_reason = _open_counters(gpu_uuids, nvml_reason)
    counter_period_s = None
    if counters is not None:  # ~1 s of back-to-back counter reads, once per worker
        counter_period_s, period_reason = slowest_period_s(detect_update_periods(counters.read_mj))
        if period_reason:
            log.warning("energy counter update period unknown: %s", period_reason)
    sampler, sampler_reason = _start_sampler(args, gpu_uuids, counters is not None)
    channel.send(
        Ready(
            worker_id=args.worker_id,
            environment=environment,
            init_duration_s=time.perf_counter() - started_s,
        )
    )
    context = MeasurementContext(
        worker_id=args.worker_id,
        backend=backend,
        environment=environment,
        counters=counters,
        gpu_uuids=gpu_uuids,
        energy_unavailable_reason=energy_reason,
        counter_period_s=counter_period_s,
        baselines=BaselineKeeper(counters, gpu_uuids) if counters is not None else None,
        processes=counters,
        thermal=counters,
        power_limits=counters,
        rapl=discover_rapl_zones(),
        sampler=sampler,
        sampler_unavailable_reason=sampler_reason,
    )
    journal = Journal(args.journal)
    try:
        while True:
            command = channel.commands.get()
            if isinstance(command, Shutdown):
                log.info("shutting down: %s", command.reason)
                return 0
            if isinstance(command, Run):
                _run_one(command, context, channel, journal)
    finally:
        journal.close()
        if sampler is not None:
            sampler.stop()
        backend.close()
        if counters is not None:
            counters.close()


def _open_counters(
    gpu_uuids: list[str], nvml_reason: str | None
) -> tuple[EnergyCounters | None, str | None]:
    if not gpu_uuids:
        if nvml_reason:
            return None, f"no GPU energy: {nvml_reason}"
        return None, "no GPU was assigned: the experiment ran on CPU, which lem cannot meter"
    try:
        return EnergyCounters(gpu_uuids), None
    except NvmlUnavailable as exc:
        return None, str(exc)


def _run_one(
    command: Run, context: MeasurementContext, channel: WorkerChannel, journal: Journal
) -> None:
    channel.cancel_requested.clear()
    channel.go_requested.clear()
    channel.busy_experiment_id = command.experiment_id

    def on_phase(phase: str, detail: str = "") -> None:
        if phase in PHASES:
            channel.send(
                Progress(
                    worker_id=context.worker_id,
                    experiment_id=command.experiment_id,
                    phase=cast(Phase, phase),
                    detail=detail,
                )
            )

    try:
        measurement = measure(
            command, context, channel.cancel_requested, on_phase, channel.go_requested
        )
    except CudaVisibilityError:
        raise
    except Exception as exc:
        log.exception("experiment %s failed", command.experiment_id)
        channel.send(
            Error(
                worker_id=context.worker_id,
                experiment_id=command.experiment_id,
                kind=type(exc).__name__,
                message=str(exc) or type(exc).__name__,
                traceback=traceback.format_exc(),
                retryable=isinstance(exc, RetryableError),
            )
        )
        return
    finally:
        channel.busy_experiment_id = None
    journal.append(measurement)
    channel.send(Result(worker_id=context.worker_id, measurement=measurement))


def _start_sampler(
    args: argparse.Namespace, gpu_uuids: list[str], have_nvml: bool
) -> tuple[Sampler | None, str | None]:
    """The telemetry sidecar for our GPUs (from this, the main thread: its parent-death
    signal follows the thread that started it), or None with the reason.

    ``LEM_TELEMETRY_INTERVAL_S`` sets the sampling interval (default 0.1 s; 0 turns the
    sidecar off, e.g. to measure what it costs).
    """
    if not gpu_uuids or not have_nvml:
        return None, "no GPU energy counters to sample"
    interval_s = float(TELEMETRY_INTERVAL_S.get() or TELEMETRY_INTERVAL_S.default)
    if interval_s <= 0:
        return None, "telemetry turned off (LEM_TELEMETRY_INTERVAL_S=0)"
    db_path = args.journal.parent / f"{args.worker_id}-{os.getpid()}.telemetry.db"
    sampler = Sampler(
        gpu_uuids, db_path, interval_s=interval_s, energy_interval_s=max(interval_s, 0.1)
    )
    try:
        sampler.start()
        sampler.ready()
    except (TelemetryUnavailable, OSError) as exc:
        sampler.stop()
        log.warning("telemetry sampler unavailable: %s", exc)
        return None, f"telemetry sampler unavailable: {exc}"
    return sampler, None
