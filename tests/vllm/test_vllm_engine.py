"""The vLLM backend on CPU without vLLM: registration, lazy imports, a clean refusal, and
the step loop's token stamps with a stand-in engine (the real engine has not run here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lem.workers.engines.base import BackendError, Cancelled
from lem.workers.engines.vllm.engine import VllmBackend
from lem.workers.engines.vllm.steps import PassResult, VllmOffline, run_pass
from lem.workers.runtime.main import BACKENDS
from lem.workers.workload.prompt_set import PromptSet
from lem.workers.workload.scenarios.offline import measure_passes


def test_the_worker_knows_the_vllm_backend_and_imports_no_engine_library() -> None:
    vllm = BACKENDS["vllm"]
    assert vllm.entry_point == "lem.workers.engines.vllm.engine:VllmBackend"
    assert vllm.environment.worker_distribution == "vllm"
    code = (
        "import sys, lem.workers.engines.vllm.engine, lem.workers.engines.vllm.translate\n"
        "import lem.workers.engines.vllm.serving\n"
        "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_vllm_the_backend_refuses_in_one_line() -> None:
    pytest.importorskip("torch")  # lem's own environment: torch, no vLLM
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("vllm is importable here")
    with pytest.raises(BackendError) as refused:
        VllmBackend().initialise([])
    message = str(refused.value)
    assert message.startswith("the vllm backend needs the vllm package in this worker's Python")
    assert "LEM_VLLM_PYTHON" in message and "\n" not in message


def test_lem_run_of_a_vllm_experiment_without_vllm_fails_with_that_line(tmp_path: Path) -> None:
    experiment = tmp_path / "e.yaml"
    experiment.write_text(
        "name: v\nbackend: vllm\ndevice: cpu\nmodel: {source: builtin}\n"
        "num_prompts: 2\ninput_tokens: 4\noutput_tokens: 4\n"
    )
    # this Python, which has no vllm (not a vLLM environment synced on this machine)
    env = {**os.environ, "LEM_VLLM_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(experiment),
         "--store", str(tmp_path / "lem.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "BackendError: the vllm backend needs the vllm package" in done.stderr


@dataclass
class Completion:
    token_ids: list[int]


@dataclass
class Output:
    request_id: str
    outputs: list[Completion]
    finished: bool
    metrics: Any = None


@dataclass
class Stats:
    queued_ts: float = 10.0
    scheduled_ts: float = 10.25
    first_token_latency: float = 0.5
    is_corrupted: bool = False


@dataclass
class FakeEngine:
    """vLLM's LLMEngine step API: each step gives every open request ``per_step`` tokens
    (up to its ``max_tokens``)."""

    per_step: int = 1
    open: dict[str, list[int]] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)

    def add_request(self, request_id: str, prompt: dict[str, Any], params: Any) -> None:
        self.open[request_id], self.targets[request_id] = [], params["max_tokens"]

    def has_unfinished_requests(self) -> bool:
        return bool(self.open)

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)
        self.open.clear()

    def step(self) -> list[Output]:
        outputs = []
        for request_id, tokens in list(self.open.items()):
            tokens.extend([7] * min(self.per_step, self.targets[request_id] - len(tokens)))
            done = len(tokens) == self.targets[request_id]
            outputs.append(Output(request_id, [Completion(list(tokens))], done, Stats()))
            if done:
                del self.open[request_id]
        return outputs


class Edges:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self) -> None:
        self.calls.append("begin")

    def end(self) -> None:
        self.calls.append("end")


def prompts(lengths: list[int]) -> list[dict[str, Any]]:
    return [{"prompt_token_ids": list(range(3, 3 + n))} for n in lengths]


def test_each_output_token_is_stamped_when_its_step_returns() -> None:
    engine = FakeEngine(per_step=2)
    done = run_pass(engine, prompts([4, 6]), [{"max_tokens": 3}, {"max_tokens": 5}],
                    threading.Event(), "p")  # fmt: skip
    first, second = done.records
    assert [len(r.token_times_s) for r in done.records] == [3, 5]
    assert (first.input_tokens, second.input_tokens, done.engine_steps) == (4, 6, 3)
    assert first.token_times_s[0] == first.token_times_s[1] < first.token_times_s[2]
    assert second.token_times_s == sorted(second.token_times_s)
    assert first.vllm_metrics == {"queued_ts": 10.0, "scheduled_ts": 10.25,
                                  "first_token_latency": 0.5}  # fmt: skip


def test_window_edges_passes_and_timed_requests() -> None:
    engine, edges = FakeEngine(), Edges()
    prompt_set = PromptSet([[3, 4], [3, 4]], [2, 2], "h", "test")
    params = [{"max_tokens": 2}] * 2
    work = VllmOffline(engine, prompt_set, prompts([2, 2]), params, params, 2)
    measured = measure_passes(work, work.pass_batches, edges, threading.Event(), 0.0, 3,
                              stamps=True)  # fmt: skip
    assert edges.calls == ["begin", "end"] and measured.passes == 3
    requests = [r for result in measured.results() for r in result.requests]
    assert [r.pass_index for r in requests] == [0, 0, 1, 1, 2, 2]
    assert all(len(r.token_times_s) == 2 and r.queued_s == 0.25 for r in requests)
    second = measured.runs[1].run
    assert isinstance(second, PassResult) and second is work.measured[1]
    assert requests[2].start_s == second.started_s >= measured.started_s


def test_cancel_aborts_the_pass_requests() -> None:
    engine, cancel = FakeEngine(), threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_pass(engine, prompts([2]), [{"max_tokens": 4}], cancel, "c")
    assert engine.aborted == ["c-0"]
