"""The openai backend against a real OpenAI-compatible server this project did not write:
``transformers serve`` with lem's built-in tiny model saved to a folder (CPU).

One server per module is attached to (offline, Poisson, concurrency; through a proxy that
corrupts its stream or answers HTTP 500); the started-mode tests start their own. Every
run goes through the real CLI (coordinator, worker, store).
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lem.coordinator.store.results_store import Store
from lem.coordinator.store.schema import MeasurementRecord
from lem.protocol.config import ExperimentConfig, config_problems
from tests.lem_run import lem_run_one

pytestmark = pytest.mark.skipif(
    shutil.which("transformers") is None
    and not (Path(sys.executable).parent / "transformers").exists(),
    reason="transformers CLI missing",
)

TRANSFORMERS = str(Path(sys.executable).parent / "transformers")
START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lem.protocol.config import ModelConfig
    from lem.protocol.engines.pytorch import PyTorchConfig
    from lem.workers.engines.pytorch.loader import load_model

    folder = tmp_path_factory.mktemp("openai") / "lem-tiny-saved"
    loaded = load_model(ModelConfig(source="builtin", name="lem-tiny"), PyTorchConfig(), "cpu")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def _wait_health(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline_s = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline_s:
        assert process.poll() is None, "transformers serve exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("transformers serve did not start")


@pytest.fixture(scope="module")
def server_url(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [TRANSFORMERS, "serve", str(model_dir), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def experiment(model_dir: Path, section: str, extra: str = "") -> str:
    return (
        f"name: openai-test\nbackend: openai\ndevice: cpu\n"
        f"model: {{source: hf, path: {model_dir}}}\n"
        f"num_prompts: 4\nbatch_size: 2\ninput_tokens: 8\noutput_tokens: 6\n"
        f"openai: {section}\n{extra}"
    )


def _check_ok(outcome_record: MeasurementRecord, requests: int) -> None:
    measurement = outcome_record.measurement
    assert outcome_record.status == "ok", outcome_record.failure_reason
    assert measurement is not None
    assert measurement.energy.energy_j is None and measurement.energy.energy_unavailable_reason
    assert measurement.work.output_tokens > 0
    assert measurement.latency.ttft_ms is not None
    assert measurement.latency.ttft_ms.count == requests


@pytest.mark.slow
def test_attached_offline_measures_latency_and_token_counts(
    server_url: str, model_dir: Path, tmp_path: Path
) -> None:
    outcome = lem_run_one(tmp_path, experiment(model_dir, f"{{url: '{server_url}'}}"), 120)
    _check_ok(outcome.record, 4)
    measurement = outcome.record.measurement
    assert measurement is not None
    # transformers serve refuses ignore_eos/min_tokens: said, not hidden
    assert "output_length_not_enforced" in measurement.flags
    # tokens come from the usage report: 6 a prompt (max_tokens), whatever the chunking
    assert measurement.work.output_tokens == 4 * 6
    assert all(r.input_tokens > 0 for r in outcome.requests)


@pytest.mark.slow
@pytest.mark.parametrize(
    "workload",
    [
        "{mode: server, arrival: poisson, rate_per_s: 20, num_requests: 6}",
        "{mode: server, arrival: concurrency, concurrency: 3, num_requests: 6}",
    ],
)
def test_attached_server_modes(
    server_url: str, model_dir: Path, tmp_path: Path, workload: str
) -> None:
    yaml = experiment(model_dir, f"{{url: '{server_url}'}}", f"workload: {workload}\n")
    outcome = lem_run_one(tmp_path, yaml, 120)
    _check_ok(outcome.record, len(outcome.requests))
    assert len(outcome.requests) >= 6


def server_pids(marker: str) -> list[int]:
    """PIDs whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _started_model(model_dir: Path, tmp_path: Path) -> Path:
    """A link to the model under a path no other server uses (to find its processes)."""
    link = tmp_path / f"started-{tmp_path.name}"
    link.symlink_to(model_dir)
    return link


@pytest.mark.slow
def test_started_server_runs_offline_logs_beside_the_worker_and_is_stopped(
    model_dir: Path, tmp_path: Path
) -> None:
    model = _started_model(model_dir, tmp_path)
    command = f'{{command: ["{TRANSFORMERS}", serve, "{model}", --port, "{{port}}"]}}'
    outcome = lem_run_one(tmp_path, experiment(model, command), 240)
    _check_ok(outcome.record, 4)
    logs = list((tmp_path / "lem-results").rglob("*.server.log")) or list(
        tmp_path.rglob("*.server.log")
    )
    assert logs and "lem starts:" in logs[0].read_text()
    assert server_pids(str(model)) == []  # no orphan


def _run_failing(tmp_path: Path, yaml: str, timeout_s: float) -> tuple[MeasurementRecord, str]:
    file = tmp_path / "experiment.yaml"
    file.write_text(yaml)
    db = tmp_path / "lem.db"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(file), "--store", str(db)],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert done.returncode != 0
    with Store(db) as store:
        [campaign] = store.list_campaigns()
        [summary] = store.campaign_detail(campaign.id).experiments
        [record] = store.experiment_measurements(summary.id)
    assert record.status == "failed"
    return record, done.stderr


@pytest.mark.slow
def test_server_killed_mid_window_fails_the_cycle_with_its_log_and_leaves_no_orphan(
    model_dir: Path, tmp_path: Path
) -> None:
    model = _started_model(model_dir, tmp_path)
    command = f'{{command: ["{TRANSFORMERS}", serve, "{model}", --port, "{{port}}"]}}'
    workload = "workload: {mode: server, arrival: concurrency, concurrency: 2, num_requests: 400}\n"
    yaml = experiment(model, command, workload + "warmup_batches: 1\n")
    killed: list[int] = []

    def killer() -> None:  # SIGKILL the server once it has served some requests
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline_s and not killed:
            for log in tmp_path.rglob("*.server.log"):
                if log.read_text(errors="replace").count("POST") >= 4:
                    for pid in server_pids(str(model)):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    record, _ = _run_failing(tmp_path, yaml, 240)
    thread.join(5)
    assert killed, "the server never got requests"
    reason = record.failure_reason or ""
    assert "killed by SIGKILL" in reason
    # the tail of the server's log: its last lines (lem's own first line only when short)
    assert ".server.log:\n" in reason and "/v1/completions" in reason.split(".server.log:")[1]
    assert server_pids(str(model)) == []


class _Proxy(http.server.ThreadingHTTPServer):
    upstream: str
    answer: Callable[[bytes], bytes]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        response = httpx.get(self.server.upstream + self.path, timeout=10)
        self.send_response(response.status_code)
        self.end_headers()
        self.wfile.write(response.content)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {"content-type": "application/json"}
        response = httpx.post(self.server.upstream + self.path, content=body, headers=headers,
                              timeout=60)  # fmt: skip
        if response.status_code != 200:  # e.g. 422 to ignore_eos: passed on as it is
            self.send_response(response.status_code)
            self.end_headers()
            self.wfile.write(response.content)
            return
        answer = self.server.answer(response.content)
        if answer.startswith(b"HTTP 500"):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": "proxy says no"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def proxy(server_url: str) -> Iterator[Callable[[Callable[[bytes], bytes]], str]]:
    servers: list[_Proxy] = []

    def start(answer: Callable[[bytes], bytes]) -> str:
        server = _Proxy(("127.0.0.1", 0), _ProxyHandler)
        server.upstream, server.answer = server_url, answer
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _garble(stream: bytes) -> bytes:
    """The second event's JSON cut in half."""
    events = stream.split(b"\n\n")
    events[1] = events[1][: len(events[1]) // 2]
    return b"\n\n".join(events)


def _truncate(stream: bytes) -> bytes:
    """Only the first event: the usage report never comes."""
    return stream.split(b"\n\n")[0] + b"\n\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_garble, "malformed stream: not JSON"),
        (_truncate, "ended without a usage report"),
        (lambda _: b"HTTP 500", "HTTP 500"),
    ],
)
def test_a_corrupt_stream_or_an_http_error_fails_the_cycle_with_the_reason(
    proxy: Callable[[Callable[[bytes], bytes]], str],
    model_dir: Path,
    tmp_path: Path,
    answer: Callable[[bytes], bytes],
    expected: str,
) -> None:
    url = proxy(answer)
    record, _ = _run_failing(tmp_path, experiment(model_dir, f"{{url: '{url}'}}"), 120)
    assert expected in (record.failure_reason or "")


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({}, "openai.command"),
        ({"command": ["x"], "url": "http://h"}, "openai.command"),
        ({"url": "h:1"}, "openai.url"),
        ({"command": ["x"], "gpu_uuids": ["GPU-1"]}, "openai.gpu_uuids"),
    ],
)
def test_the_section_needs_exactly_one_of_command_and_url(
    section: dict[str, object], field: str
) -> None:
    import msgspec

    config = msgspec.convert({"backend": "openai", "openai": section}, ExperimentConfig)
    assert field in [path for path, _ in config_problems(config)]


def test_a_bad_section_is_one_line_exit_2(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("backend: openai\ndevice: cpu\nopenai: {url: 'http://h', command: [x]}\n")
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "run", str(file), "--store",
         str(tmp_path / "lem.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lem: error:") and "openai.command" in lines[0]


def test_a_started_servers_processes_are_not_contamination() -> None:
    from lem.workers.metering.contamination import ProcessWatch

    class Lister:
        def compute_pids(self, uuid: str) -> set[int]:
            return {100, 200, 300}  # lem's worker, the server it started, a stranger

    watch = ProcessWatch(Lister(), ["GPU-a"], own_pid=100, companions=lambda: {200})
    watch.begin()
    watch.end()
    assert watch.foreign == {"GPU-a": {300}}
    alone = ProcessWatch(Lister(), ["GPU-a"], own_pid=100)
    alone.begin()
    assert alone.foreign == {"GPU-a": {200, 300}}


@pytest.mark.slow
def test_a_rate_sweep_against_a_real_server(
    server_url: str, model_dir: Path, tmp_path: Path
) -> None:
    """``workload.sweep`` through ``lem campaign`` against ``transformers serve``: the
    maximum throughput first (every request in flight), then each rate a share of it."""
    body = experiment(
        model_dir, f"{{url: '{server_url}'}}",
        "workload: {mode: server, arrival: poisson, num_requests: 6,"
        " sweep: {rates: 2, light_fraction: 0.2, top_fraction: 0.6}}\n",
    )  # fmt: skip
    campaign = tmp_path / "sweep.yaml"
    campaign.write_text("name: served-sweep\nexperiment:\n" + "".join(
        f"  {line}\n" for line in body.splitlines()
    ))  # fmt: skip
    db = tmp_path / "lem.db"
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", "campaign", str(campaign), "--store", str(db)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.read_only(db) as store:
        [stored] = store.list_campaigns()
        found = [store.experiment_at(stored.id, p) for p in range(3)]
        assert all(f is not None for f in found)
        configs = [f[1] for f in found if f is not None]
        records = [store.experiment_measurements(f[0])[0] for f in found if f is not None]
    assert all(r.status == "ok" for r in records), [r.failure_reason for r in records]
    probe = records[0].measurement
    assert probe is not None and configs[0].workload.concurrency == 6
    max_per_s = probe.work.num_prompts / probe.work.duration_s
    assert [c.workload.rate_per_s for c in configs[1:]] == pytest.approx(
        [0.2 * max_per_s, 0.6 * max_per_s], rel=1e-5
    )
