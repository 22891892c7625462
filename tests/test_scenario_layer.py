"""The scenario layer is the one measuring method: window edges are opened in one module,
warmup is run from the scenario layer only, no engine writes its own ``run``, and the
offline and server scenarios order synchronisations, edges, batches and result reads as
the method says (checked with a scripted engine)."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import (
    Backend,
    BatchPlace,
    BatchResult,
    Cancelled,
    DeviceReport,
    Engine,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
    TimedRequest,
)
from lem.workers.engines.pytorch.engine import PyTorchBackend
from lem.workers.engines.sleep import SleepBackend
from lem.workers.engines.tensorrt.engine import TensorRtBackend
from lem.workers.engines.vllm.engine import VllmBackend
from lem.workers.workload.prompt_set import PromptSet
from lem.workers.workload.scenarios import ScenarioBackend, run_scenario

WORKERS = Path(__file__).resolve().parent.parent / "workers"
WINDOW_MODULE = "workload/scenarios/window.py"


def calls_in_workers() -> Iterator[tuple[str, ast.Call]]:
    """(module path relative to workers/, call) for every call in the worker's code."""
    for path in sorted(WORKERS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path.relative_to(WORKERS).as_posix(), node


def test_window_edges_are_opened_in_one_module() -> None:
    """Every ``x.begin()`` / ``x.end()`` call of the worker's code (a window's edges) is in
    ``workload/scenarios/window.py``: the scenario layer opens and closes windows, no
    engine does (``grep -rn '\\.begin()' workers/`` shows that module only)."""
    edges = {
        f"{module}:{call.lineno}"
        for module, call in calls_in_workers()
        if isinstance(call.func, ast.Attribute)
        and call.func.attr in ("begin", "end")
        and not call.args
        and not call.keywords
    }
    assert edges and {site.partition(":")[0] for site in edges} == {WINDOW_MODULE}, edges


def test_warmup_runs_from_the_scenario_layer_only() -> None:
    callers = {
        module
        for module, call in calls_in_workers()
        if (isinstance(call.func, ast.Name) and call.func.id == "warm_up")
        or (isinstance(call.func, ast.Attribute) and call.func.attr == "warm_up")
    }
    assert callers == {"workload/scenarios/offline.py", "workload/scenarios/server.py"}


def test_no_engine_imports_the_method_or_writes_its_own_run() -> None:
    method = ("warmup", "server_loop", "arrivals", "scenarios.window", "scenarios.offline",
              "scenarios.server")  # fmt: skip
    for path in sorted((WORKERS / "engines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith(method), f"{path}: imports {node.module}"
    engines: list[Engine] = [SleepBackend(), PyTorchBackend(), VllmBackend(), TensorRtBackend()]
    backends: list[Backend] = [SleepBackend(), PyTorchBackend(), VllmBackend(), TensorRtBackend()]
    for backend in backends:
        assert type(backend).run is ScenarioBackend.run, backend.name  # the one written
        backend.close()
    for engine in engines:
        engine.close()


# A scripted engine: every action is appended to one event list.


@dataclass(frozen=True)
class Batch:
    name: str
    rows: int


class ScriptedRun:
    def __init__(self, events: list[str], batch: Batch, stamps: bool) -> None:
        self.events, self.batch, self.stamps = events, batch, stamps

    def result(self, place: BatchPlace) -> BatchResult:
        self.events.append(f"read {self.batch.name}@{place.pass_index}.{place.batch_index}")
        requests = [
            TimedRequest(place.pass_index, place.batch_index, 4, 1.0, [2.0, 3.0], 0.0)
            for _ in range(self.batch.rows)
        ]
        return BatchResult(self.batch.rows, 4 * self.batch.rows, 2 * self.batch.rows, 3,
                           requests if self.stamps else [])  # fmt: skip


class ScriptedWork:
    def __init__(self, events: list[str], cancel_at: str | None, cancel: threading.Event):
        self.events, self.cancel_at, self.cancel = events, cancel_at, cancel
        self.prompt_set = PromptSet([[1, 2, 3, 4]] * 3, [2] * 3, "hash", "scripted")
        self.pass_batches = [Batch("a", 2), Batch("b", 1)]
        self.prefill_batches = [Batch("p", 3)]

    def warmup_batch(self, index: int) -> Batch:
        return Batch(f"w{index}", 2)

    def run_batch(self, batch: Batch, stamps: bool, cancel: threading.Event) -> ScriptedRun:
        self.events.append(f"run {batch.name}")
        if batch.name == self.cancel_at:
            self.cancel.set()
        return ScriptedRun(self.events, batch, stamps)

    def synchronize(self) -> None:
        self.events.append("sync")


class ScriptedSession:
    """A server session whose requests finish at once, one engine step each."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.prompt_set = PromptSet([[1, 2, 3, 4]] * 2, [2] * 2, "hash", "scripted")
        self.sent: list[str] = []
        self.open = 0
        self.steps = 0

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None:
        self.events.append(f"submit {prefix}{index}")
        self.sent.append(f"{prefix}{index}")
        self.open += 1

    def wait_finished(self, timeout_s: float) -> int:
        finished, self.open = self.open, 0
        self.steps += finished
        return finished

    def clear(self) -> None:
        self.events.append("clear")
        self.sent.clear()

    def engine_steps(self) -> int:
        self.events.append(f"steps {self.steps}")
        return self.steps

    def synchronize(self) -> None:
        self.events.append("sync")

    def timed(self, sent: int) -> list[TimedRequest]:
        self.events.append(f"timed {sent}")
        return [TimedRequest(i // 2, None, 4, 1.0, [2.0, 3.0], 0.1) for i in range(sent)]


class ScriptedEngine(ScenarioBackend):
    name = "scripted"

    def __init__(self, cancel_at: str | None = None) -> None:
        self.events: list[str] = []
        self.cancel_at = cancel_at
        self.cancel = threading.Event()

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        return DeviceReport("cpu", [], None, None, {})

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        self.events.append("load")
        return LoadInfo(1.5, False, 1, "cpu")

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[ScriptedWork]:
        self.events.append("prepare")
        yield ScriptedWork(self.events, self.cancel_at, self.cancel)
        self.events.append("done")

    @contextmanager
    def serve(self, config: ExperimentConfig) -> Iterator[ScriptedSession]:
        self.events.append("start")
        yield ScriptedSession(self.events)
        self.events.append("stop")

    def memory(self) -> GpuMemory:
        return GpuMemory(None, None, "scripted")

    def close(self) -> None:
        pass


class Window:
    def __init__(self, events: list[str], name: str) -> None:
        self.events, self.name = events, name

    def begin(self) -> None:
        self.events.append(f"begin {self.name}")

    def end(self) -> None:
        self.events.append(f"end {self.name}")


def offline_config(**fields: object) -> ExperimentConfig:
    data = {"device": "cpu", "warmup_batches": 2, "min_iterations": 2, **fields}
    return msgspec.convert(data, ExperimentConfig)


def test_offline_orders_warmup_edges_passes_prefill_and_reads() -> None:
    engine = ScriptedEngine()
    phases: list[str] = []
    stats = run_scenario(
        engine, offline_config(), Window(engine.events, "full"), engine.cancel,
        lambda phase, detail="": phases.append(phase), 0.0, Window(engine.events, "prefill"),
    )  # fmt: skip
    assert engine.events == [
        "load", "prepare",
        "run w0", "sync", "run w1", "sync",  # warmup: each batch synchronised
        "sync", "begin full", "run a", "run b", "run a", "run b", "sync", "end full",
        "sync", "begin prefill", "run p", "run p", "sync", "end prefill",
        "read a@0.0", "read b@0.1", "read a@1.0", "read b@1.1",  # after the windows only
        "done",
    ]  # fmt: skip
    assert phases == ["loading", "warmup", "measuring", "measuring"]
    assert (stats.repetitions, stats.batches, stats.num_prompts) == (2, 4 * 3, 6)
    assert (stats.input_tokens, stats.output_tokens, stats.warmup_batches) == (24, 12, 2)
    assert (stats.prefill_repetitions, stats.model_load_s, stats.device) == (2, 1.5, "cpu")
    assert stats.prompt_set_hash == "hash" and len(stats.timed_requests) == 6
    assert stats.gpu_memory_unavailable_reason == "scripted"
    assert stats.latency_unavailable_reason is None


def test_a_cancel_drops_the_window_and_timing_off_says_why() -> None:
    engine = ScriptedEngine(cancel_at="a")
    with pytest.raises(Cancelled, match="cancelled during a measured window"):
        run_scenario(engine, offline_config(), Window(engine.events, "full"), engine.cancel,
                     lambda phase, detail="": None)  # fmt: skip
    assert engine.events[-3:] == ["sync", "begin full", "run a"]  # "b" never runs
    assert "end full" not in engine.events and "done" not in engine.events
    quiet = ScriptedEngine()
    off = offline_config(workload={"token_timing": False})
    stats = run_scenario(quiet, off, Window(quiet.events, "full"), quiet.cancel,
                         lambda phase, detail="": None)  # fmt: skip
    assert stats.timed_requests == []
    assert stats.latency_unavailable_reason == "token timing off (workload.token_timing: false)"


def test_server_warms_up_then_feeds_requests_inside_the_window() -> None:
    engine = ScriptedEngine()
    config = offline_config(
        batch_size=2, warmup_batches=1,
        workload={"mode": "server", "arrival": "concurrency", "concurrency": 1,
                  "num_requests": 3},
    )  # fmt: skip
    stats = run_scenario(engine, config, Window(engine.events, "full"), engine.cancel,
                         lambda phase, detail="": None)  # fmt: skip
    assert engine.events == [
        "load", "start", "submit warmup0-0", "submit warmup0-1", "clear",
        "sync", "begin full", "steps 2", "submit 0", "submit 1", "submit 2", "steps 5",
        "sync", "end full", "timed 3", "stop",
    ]  # fmt: skip
    assert (stats.num_prompts, stats.repetitions, stats.batches) == (3, 2, 3)
    assert (stats.output_tokens, stats.input_tokens, stats.warmup_batches) == (6, 12, 1)
