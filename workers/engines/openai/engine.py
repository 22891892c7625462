"""``OpenAiBackend``: lem's engine for an OpenAI-compatible inference server.

Start mode (``openai.command``): ``load`` starts the server (``process.py``) on the
worker's GPUs and waits until it is ready; the server is kept while the load key stays
the same (and it is alive) and stopped, its whole process group, on a change of key and
on ``close``. Attach mode (``openai.url``): ``load`` only waits for readiness.

Offline: one pass is the whole prompt set, sent at once with at most ``batch_size``
requests in flight (one thread each); warmup batches are ``batch_size`` prompts, cycled.
Server mode: each ``submit`` is one thread streaming one request (``client.py``), stamps
as its chunks arrive. The scenario layer (``lem.workers.workload.scenarios``) measures.

Any request's failure fails the run with its reason and the tail of the started server's
log (the server's death is named when it died). Flags for the measurement
(``run_flags``): ``output_length_not_enforced`` when the server refused ``ignore_eos`` /
``min_tokens``, or took them and a request's output was not the length asked;
``chunks_not_tokens`` when a request's streamed chunks were not one per token (its tokens
then share chunk stamps: ``client.Streamed.token_times_s``); ``usage_not_reported`` when
a stream had no usage report (counted instead: ``client``; input tokens by the server,
once per prompt text, after the window: ``input_tokens``).
``own_pids``: the started server's processes, which contamination checks count as lem's.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from lem.protocol.config import ExperimentConfig, load_key
from lem.workers.engines.base import (
    BackendError,
    BatchPlace,
    BatchResult,
    Cancelled,
    DeviceReport,
    GpuMemory,
    LoadInfo,
    PhaseCallback,
    ServerSession,
    TimedRequest,
)
from lem.workers.engines.openai.client import EndpointClient, EndpointError, Streamed
from lem.workers.engines.openai.process import (
    DEFAULT_READY_PATHS,
    ServerProcess,
    wait_ready,
)
from lem.workers.engines.openai.prompts import TextPrompts, build_text_prompts
from lem.workers.workload.prompt_set import PromptSet, cycled_batch
from lem.workers.workload.scenarios import ScenarioBackend

DEATH_WAIT_S = 1.0  # how long a failed request waits to see whether the server died
MEMORY_REASON = "the server's own processes hold the GPU memory: lem does not read its peak"


@dataclass(frozen=True)
class RequestBatch:
    """Prompt indices sent together, at most ``concurrency`` in flight; ``max_tokens``
    None: each prompt's own output length."""

    indices: list[int]
    concurrency: int
    max_tokens: int | None = None


@dataclass(frozen=True)
class FinishedBatch:
    """A batch's streamed requests, in prompt order; ``input_tokens`` counts a request's
    input tokens (read after the window: it may ask the server)."""

    requests: list[Streamed]
    input_tokens: Callable[[Streamed], int]

    def result(self, place: BatchPlace) -> BatchResult:
        inputs = [self.input_tokens(r) for r in self.requests]
        timed = [
            TimedRequest(
                pass_index=place.pass_index,
                batch_index=place.batch_index,
                input_tokens=tokens,
                start_s=r.start_s,
                token_times_s=r.token_times_s(),
                queued_s=None,
            )
            for r, tokens in zip(self.requests, inputs, strict=True)
        ]
        return BatchResult(
            len(self.requests),
            sum(inputs),
            sum(r.completion_tokens for r in self.requests),
            None,
            timed,
        )


class EndpointWork:
    """The offline work: one pass = the whole prompt set."""

    def __init__(self, backend: OpenAiBackend, config: ExperimentConfig) -> None:
        self.backend = backend
        self.config = config
        self.prompts = backend.prompts(config)
        everything = list(range(len(self.prompts.texts)))
        size = config.batch_size
        self.pass_batches = [RequestBatch(everything, size)]
        self.prefill_batches = [RequestBatch(everything, size, max_tokens=1)]

    @property
    def prompt_set(self) -> PromptSet:
        return self.prompts.prompt_set

    def warmup_batch(self, index: int) -> RequestBatch:
        size = self.config.batch_size
        return RequestBatch(list(cycled_batch(index, size, len(self.prompts.texts))), size)

    def run_batch(
        self, batch: RequestBatch, stamps: bool, cancel: threading.Event
    ) -> FinishedBatch:
        if cancel.is_set():
            raise Cancelled("cancelled")
        outputs = self.prompts.prompt_set.output_tokens_per_prompt

        def one(index: int) -> Streamed:
            tokens = batch.max_tokens or outputs[index]
            return self.backend.request(self.prompts.texts[index], tokens, cancel)

        with ThreadPoolExecutor(max_workers=max(1, batch.concurrency)) as pool:
            futures = [pool.submit(one, index) for index in batch.indices]
            try:
                done = [future.result() for future in futures]
                return FinishedBatch(done, self.backend.input_tokens)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def synchronize(self) -> None:
        pass  # every request of a batch has finished when run_batch returns


class EndpointSession:
    """Server mode: each request is a thread streaming from the server."""

    def __init__(self, backend: OpenAiBackend, config: ExperimentConfig) -> None:
        self.backend = backend
        self.config = config
        self.prompts = backend.prompts(config)
        self.stop = threading.Event()
        self._lock = threading.Condition()
        self._requests: list[tuple[str, int, float | None, list[Streamed]]] = []
        self._threads: list[threading.Thread] = []
        self._unreported = 0
        self._error: BaseException | None = None

    @property
    def prompt_set(self) -> PromptSet:
        return self.prompts.prompt_set

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None:
        count = len(self.prompts.texts)
        text = self.prompts.texts[index % count]
        tokens = self.prompts.prompt_set.output_tokens_per_prompt[index % count]
        done: list[Streamed] = []

        def stream() -> None:
            try:
                done.append(self.backend.request(text, tokens, self.stop))
            except BaseException as error:  # reported by wait_finished
                with self._lock:
                    self._error = self._error or error
            with self._lock:
                self._unreported += 1
                self._lock.notify_all()

        thread = threading.Thread(target=stream, name="lem-openai-request", daemon=True)
        with self._lock:
            self._requests.append((prefix, index, scheduled_s, done))
            self._threads.append(thread)
        thread.start()

    def wait_finished(self, timeout_s: float) -> int:
        with self._lock:
            self._lock.wait_for(lambda: self._unreported > 0 or self._error is not None, timeout_s)
            if self._error is not None:
                raise self._error
            finished, self._unreported = self._unreported, 0
            return finished

    def clear(self) -> None:
        with self._lock:
            self._requests = []
            self._threads = [t for t in self._threads if t.is_alive()]

    def engine_steps(self) -> int | None:
        return None

    def synchronize(self) -> None:
        pass  # no request is in flight at either window edge

    def timed(self, sent: int) -> list[TimedRequest]:
        with self._lock:
            measured = [r for r in self._requests if r[0] == ""][:sent]
        count = len(self.prompts.texts)
        timed = []
        for _, index, scheduled_s, done in measured:
            if not done:
                raise BackendError(f"request {index} did not finish")
            streamed = done[0]
            timed.append(
                TimedRequest(
                    pass_index=index // count,
                    batch_index=None,
                    input_tokens=self.backend.input_tokens(streamed),
                    start_s=streamed.start_s,
                    token_times_s=streamed.token_times_s(),
                    queued_s=None,
                    scheduled_s=scheduled_s,
                )
            )
        return timed

    def close(self, grace_s: float) -> None:
        self.stop.set()
        deadline_s = time.monotonic() + grace_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline_s - time.monotonic()))


class OpenAiBackend(ScenarioBackend):
    name = "openai"

    def __init__(self) -> None:
        self._gpu_uuids: list[str] = []
        self._server: ServerProcess | None = None
        self._client: EndpointClient | None = None
        self._key: Any = None
        self._loads = 0
        self._prompts: tuple[Any, TextPrompts] | None = None
        self._flags: set[str] = set()
        self._flags_lock = threading.Lock()
        self._counted: dict[str, int] = {}  # input tokens of a prompt text, asked once
        self._grace_s = 10.0

    def initialise(self, expected_gpu_uuids: list[str]) -> DeviceReport:
        self._gpu_uuids = list(expected_gpu_uuids)
        try:
            httpx_version: str | None = version("httpx")
        except PackageNotFoundError:
            httpx_version = None
        packages = {"httpx": httpx_version} if httpx_version else {}
        device = "cuda" if expected_gpu_uuids else "cpu"
        return DeviceReport(device, self._gpu_uuids, None, httpx_version, packages)

    def load(self, config: ExperimentConfig, on_phase: PhaseCallback) -> LoadInfo:
        section = config.openai
        device = "cuda" if self._gpu_uuids and config.device != "cpu" else "cpu"
        if section.url is not None and device == "cuda":
            stated = set(section.gpu_uuids)
            if stated != set(self._gpu_uuids):
                raise BackendError(
                    f"openai.gpu_uuids: the server at {section.url} must run on the GPUs "
                    f"lem measures ({', '.join(self._gpu_uuids)}); stated: "
                    f"{', '.join(sorted(stated)) or 'none'}"
                )
        key = load_key(config)
        self._flags = set()
        alive = self._server is None or self._server.exit_status() is None
        if key == self._key and self._client is not None and alive:
            return LoadInfo(0.0, True, self._loads, device)
        self._release()
        self._grace_s = section.stop_grace_s
        started_s = time.perf_counter()
        paths = (section.ready_path,) if section.ready_path else DEFAULT_READY_PATHS
        if section.command is not None:
            on_phase("loading", f"starting the server: {' '.join(section.command)}")
            self._server = ServerProcess.start(
                section.command, self._gpu_uuids, section.environment
            )
            base_url = f"http://127.0.0.1:{self._server.port}"
        else:
            base_url = (section.url or "").rstrip("/")
        try:
            wait_ready(base_url, paths, section.ready_timeout_s, self._server)
        except BaseException:
            self._release()
            raise
        model = section.served_model or config.model.path or config.model.name or ""
        self._client = EndpointClient(
            base_url, section.api, model, section.request_timeout_s, config.ignore_eos,
            config.greedy,
        )  # fmt: skip
        self._key = key
        self._loads += 1
        return LoadInfo(time.perf_counter() - started_s, False, self._loads, device)

    def prompts(self, config: ExperimentConfig) -> TextPrompts:
        key = (config.prompts, config.num_prompts, config.input_tokens, config.output_tokens)
        if self._prompts is None or self._prompts[0] != key:
            self._prompts = (key, build_text_prompts(config))
        return self._prompts[1]

    def request(self, text: str, max_tokens: int, cancel: threading.Event) -> Streamed:
        """One streaming request; a failure is a ``BackendError`` with the server's log."""
        client = self._client
        if client is None:
            raise BackendError("the openai backend has no server")
        try:
            streamed = client.stream(text, max_tokens, cancel)
        except EndpointError as error:
            raise EndpointError(self._with_server(str(error))) from None
        flags = []
        short = streamed.completion_tokens != max_tokens  # taken but not honoured
        if client.exact_lengths and (not client.lengths_enforced or short):
            flags.append("output_length_not_enforced")
        if streamed.chunks_not_tokens:
            flags.append("chunks_not_tokens")
        if not streamed.usage_reported:
            flags.append("usage_not_reported")
        if flags:
            with self._flags_lock:
                self._flags.update(flags)
        return streamed

    def input_tokens(self, streamed: Streamed) -> int:
        """A request's input tokens: its usage report's, else the server's count of its
        prompt (asked once per text; after the window, when the results are read)."""
        if streamed.prompt_tokens is not None:
            return streamed.prompt_tokens
        if streamed.prompt not in self._counted:
            if self._client is None:
                raise BackendError("the openai backend has no server")
            try:
                self._counted[streamed.prompt] = self._client.count_tokens(streamed.prompt)
            except EndpointError as error:
                raise EndpointError(self._with_server(str(error))) from None
        return self._counted[streamed.prompt]

    def _with_server(self, message: str) -> str:
        server = self._server
        if server is None:
            return message
        # a request that failed because the server died often fails a moment before the
        # server's exit can be seen: give it a second to be reaped, to name its death
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.popen.wait(timeout=DEATH_WAIT_S)
        if server.exit_status() is not None:
            return f"{message}; {server.describe_death()}"
        return f"{message}; last lines of the server's log {server.log_path}:\n{server.tail()}"

    @contextmanager
    def offline(self, config: ExperimentConfig) -> Iterator[EndpointWork]:
        yield EndpointWork(self, config)

    def serve(self, config: ExperimentConfig) -> AbstractContextManager[ServerSession]:
        return self._session(config)

    @contextmanager
    def _session(self, config: ExperimentConfig) -> Iterator[EndpointSession]:
        session = EndpointSession(self, config)
        try:
            yield session
        finally:
            session.close(config.openai.request_timeout_s)

    def run_flags(self) -> list[str]:
        """Flags of the last run (see the module docstring)."""
        with self._flags_lock:
            return sorted(self._flags)

    def own_pids(self) -> set[int]:
        """The started server's processes (none in attach mode)."""
        return self._server.pids() if self._server is not None else set()

    def memory(self) -> GpuMemory:
        return GpuMemory(None, None, MEMORY_REASON)

    def _release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._counted = {}
        if self._server is not None:
            self._server.stop(self._grace_s)
            self._server = None
        self._key = None

    def close(self) -> None:
        self._release()
