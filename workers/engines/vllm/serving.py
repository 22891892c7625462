"""Server mode of the vLLM backend: vLLM's ``AsyncLLM`` (vLLM v1's async engine, the one
its OpenAI server runs on) as a server session (``ServerSession``), fed by the server
scenario's arrival process (``lem.workers.workload.scenarios.server``).

Not yet run on a GPU: written against vLLM 0.33's API (``AsyncLLM.from_engine_args``,
``AsyncLLM.generate`` as an async generator of ``RequestOutput``, ``AsyncLLM.shutdown``,
``SamplingParams.output_kind = RequestOutputKind.DELTA``), checked by the contract tests
and driven in tests by a stand-in engine only.

The engine lives on an asyncio event loop in a dedicated thread (``EventLoopThread``);
``AsyncLLM`` is built on that loop, so its output handler task runs there. ``submit``
(the feeding thread) stamps the send (``perf_counter``) and schedules one streaming task
per request on the loop. Each request streams deltas (``RequestOutputKind.DELTA``): when
one reaches lem's task it is stamped ``perf_counter`` right then, one stamp per new
token. When a delta carries k > 1 tokens (vLLM's collector merges deltas that arrived
while lem's task had not yet read the last one), the k tokens share that stamp: that is
when the client saw them. vLLM's own request metrics (``RequestOutput.metrics``, a
``RequestStateStats``, filled when stats are on) are kept beside lem's; its queue time
(``scheduled_ts - queued_ts``) fills ``queued_s``. The window's edges need no device sync
in lem's process (vLLM's GPU work runs in its engine process): at ``begin`` no request is
in flight, at ``end`` the last token has reached lem.

Imports neither vLLM nor torch: the backend (``engine.py``) builds the engine and the
sampling params and hands them in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from lem.workers.engines.base import BackendError, TimedRequest
from lem.workers.engines.vllm.steps import metrics_dict, queued_from_metrics
from lem.workers.workload.prompt_set import PromptSet

T = TypeVar("T")
STOP_WAIT_S = 30.0  # how long cancelled requests' tasks are waited for at most (s)


class EventLoopThread:
    """An asyncio event loop running forever in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="lem-vllm-loop", daemon=True
        )
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait up to ``timeout_s`` s for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Schedule ``coroutine`` on the loop; its future (cancel it to cancel the task)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        """Stop the loop, join its thread and close it."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class AsyncEngine:
    """A started ``AsyncLLM`` with the loop it runs on. ``shutdown`` ends both."""

    def __init__(self, make_engine: Callable[[], Any]) -> None:
        """Build the engine by ``make_engine()`` (e.g. ``AsyncLLM.from_engine_args(...)``)
        on a new loop thread, so that vLLM's output handler starts on that loop."""
        self.loop = EventLoopThread()

        async def make() -> Any:
            return make_engine()

        try:
            self.engine: Any = self.loop.call(make())
        except BaseException:
            self.loop.close()
            raise

    def shutdown(self) -> None:
        """Shut vLLM's engine (its engine-core process) down, then the loop."""
        try:
            self.engine.shutdown()
        finally:
            self.loop.close()


@dataclass
class StreamRecord:
    """One request as the client saw it: its prompt's index and length (tokens), when it
    was sent and meant to be sent (perf_counter s; scheduled None in closed loop), each
    output token's arrival (perf_counter s) and vLLM's own metrics (None when none)."""

    prompt_index: int
    input_tokens: int
    start_s: float
    scheduled_s: float | None
    token_times_s: list[float] = field(default_factory=list)
    vllm_metrics: dict[str, Any] | None = None
    finished: bool = False


class AsyncLlmServer:
    """An ``AsyncLLM`` as a server session (``ServerSession``). Leaving its ``with`` after
    a failure cancels the requests still in flight."""

    def __init__(
        self, engine: AsyncEngine, prompt_set: PromptSet, prompts: list[Any], params: list[Any]
    ) -> None:
        """``prompts``: vLLM ``TokensPrompt``s (dicts with ``prompt_token_ids``) of
        ``prompt_set``; ``params``: one ``SamplingParams`` each, streaming deltas."""
        self.engine = engine
        self.prompt_set = prompt_set
        self.prompts = prompts
        self.params = params
        self.records: dict[str, StreamRecord] = {}
        self._tasks: dict[str, concurrent.futures.Future[None]] = {}
        self._done: queue.SimpleQueue[str | BaseException] = queue.SimpleQueue()
        # vLLM wants each request id unique; a kept engine serves later runs too
        self._run_id = uuid.uuid4().hex[:8]

    def submit(self, index: int, scheduled_s: float | None, prefix: str = "") -> None:
        """Send request ``index`` (prompt ``index`` mod the prompt count) now."""
        prompt = index % len(self.prompts)
        key = f"{prefix}{index}"
        record = StreamRecord(
            prompt, len(self.prompts[prompt]["prompt_token_ids"]), time.perf_counter(),
            scheduled_s,
        )  # fmt: skip
        self.records[key] = record
        self._tasks[key] = self.engine.loop.spawn(self._stream(key, record))

    async def _stream(self, request_id: str, record: StreamRecord) -> None:
        try:
            outputs = self.engine.engine.generate(
                prompt=self.prompts[record.prompt_index],
                sampling_params=self.params[record.prompt_index],
                request_id=f"{self._run_id}-{request_id}",  # unique on a kept engine too
            )
            async for output in outputs:
                now_s = time.perf_counter()
                new_tokens = len(output.outputs[0].token_ids)  # a delta: only the new ones
                record.token_times_s.extend([now_s] * new_tokens)
                if output.finished:
                    record.vllm_metrics = metrics_dict(getattr(output, "metrics", None))
            record.finished = True
            self._done.put(request_id)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the feeding thread
            self._done.put(error)

    def wait_finished(self, timeout_s: float) -> int:
        """Block up to ``timeout_s`` s for requests to finish; how many finished. Raises
        ``BackendError`` when one failed."""
        try:
            done = [self._done.get(timeout=timeout_s)]
        except queue.Empty:
            return 0
        while not self._done.empty():
            done.append(self._done.get_nowait())
        for item in done:
            if isinstance(item, BaseException):
                first = (str(item).strip().splitlines() or [type(item).__name__])[0]
                raise BackendError(f"a vLLM request failed: {type(item).__name__}: {first}")
        return len(done)

    def stop(self) -> None:
        """Cancel every unfinished request's task (vLLM aborts a request whose generator
        is cancelled) and wait for them to end."""
        open_tasks = [task for task in self._tasks.values() if not task.done()]
        for task in open_tasks:
            task.cancel()
        concurrent.futures.wait(open_tasks, timeout=STOP_WAIT_S)

    def clear(self) -> None:
        """Forget every request (after warmup: all of them finished)."""
        self.records.clear()
        self._tasks.clear()
        while not self._done.empty():
            self._done.get_nowait()

    def __enter__(self) -> AsyncLlmServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self.stop()

    def engine_steps(self) -> None:
        """AsyncLLM reports no engine steps to its client."""
        return None

    def synchronize(self) -> None:
        """Nothing: vLLM's GPU work runs in its engine process; requests are finished."""

    def measured_metrics(self) -> list[dict[str, Any] | None]:
        """vLLM's own metrics of each measured request (after ``clear``), in send order."""
        return [self.records[str(index)].vllm_metrics for index in range(len(self.records))]

    def timed(self, sent: int) -> list[TimedRequest]:
        """One TimedRequest per sent request, in send order."""
        requests = []
        for index in range(sent):
            record = self.records[str(index)]
            if not record.finished or not record.token_times_s:
                raise BackendError(f"request {index} finished with no output token")
            requests.append(
                TimedRequest(
                    pass_index=index // len(self.prompts),
                    batch_index=None,
                    input_tokens=record.input_tokens,
                    start_s=record.start_s,
                    token_times_s=list(record.token_times_s),
                    queued_s=queued_from_metrics(record.vllm_metrics),
                    scheduled_s=record.scheduled_s,
                )
            )
        return requests
