"""The OpenAI streaming client of the openai engine: one request, its chunks stamped as
they arrive, its token counts from the server's usage report.

Requests are ``POST /v1/completions`` or ``/v1/chat/completions`` with ``stream: true``
and ``stream_options.include_usage: true``; ``max_tokens`` is the prompt's output length,
and when exact lengths are asked (``ignore_eos``) also ``ignore_eos: true`` and
``min_tokens`` (vLLM, SGLang, llama.cpp's server honour them). A server that refuses
those fields (HTTP 400/422) gets the request again without them once, and from then on
the client leaves them out and says so (``lengths_enforced`` false: the flag
``output_length_not_enforced``). httpx's synchronous client runs in the caller's thread
(one thread per request in flight, as the scenario layer drives it); every read has a
timeout.

A stream without a usage report (llama-cpp-python's server ignores ``stream_options``)
that says why it finished (a ``finish_reason``) is counted instead
(``Streamed.usage_reported`` false): its output tokens are ``max_tokens`` when it
finished for ``length`` (the API's meaning: the limit was reached), else one per text
chunk; its input tokens are left to ``count_tokens`` (the server's
``/extras/tokenize/count``), which the engine asks after the window. One with neither
was cut short and fails, ``[DONE]`` or not (llama-cpp-python's server ends a stream with
``[DONE]`` alone when another request arrives, unless started with
``--interrupt_requests false``).

Stamps: each chunk that carries text is stamped ``time.perf_counter()`` when it is
parsed. A server's detokenizer may merge several tokens into one chunk, so the stamps
are the chunks', and the token count is the usage report's ``completion_tokens``
(``Streamed.token_times_s`` makes one stamp per token from them: see there).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from lem.workers.engines.base import BackendError, Cancelled

PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
LENGTH_FIELDS = ("ignore_eos", "min_tokens")
COUNT_PATH = "/extras/tokenize/count"  # llama-cpp-python's server: {"input"} -> {"count"}


class EndpointError(BackendError):
    """A request to the server failed: an HTTP error, a malformed stream, a timeout."""


@dataclass
class Streamed:
    """One finished streaming request. Times in s on ``perf_counter``'s clock.

    ``chunk_times_s``: when each chunk with text arrived; ``completion_tokens`` and
    ``prompt_tokens``: the server's usage report. ``usage_reported`` false: the stream
    had none; ``completion_tokens`` was counted (see the module docstring) and
    ``prompt_tokens`` is None (the engine counts ``prompt`` after the window).
    """

    start_s: float
    prompt: str = ""
    chunk_times_s: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int | None = 0
    end_s: float = 0.0  # when the stream's last event arrived
    usage_reported: bool = True

    @property
    def chunks_not_tokens(self) -> bool:
        return len(self.chunk_times_s) != self.completion_tokens

    def token_times_s(self) -> list[float]:
        """One stamp per output token (``completion_tokens`` of them): the chunks' stamps,
        in order; when the server merged tokens into fewer chunks, the tokens left over
        share the last chunk's stamp (they reached lem then, and no earlier); when there
        were more chunks than tokens, the first ``completion_tokens`` stamps; when no
        chunk carried text (tokens that decode to nothing yet, e.g. part of a UTF-8
        character), all share the stream's end. TTFT is the first chunk's either way;
        ITLs are the gaps between chunks (plus zeros for merged tokens)."""
        stamps = self.chunk_times_s[: self.completion_tokens] or [self.end_s]
        if not self.completion_tokens:
            return []
        return stamps + [stamps[-1]] * (self.completion_tokens - len(stamps))


class EndpointClient:
    """Requests to one server (``base_url``) for ``model`` over ``api``."""

    def __init__(
        self,
        base_url: str,
        api: str,
        model: str,
        request_timeout_s: float,
        exact_lengths: bool,
        greedy: bool,
    ) -> None:
        self.base_url = base_url
        self.path = PATHS[api]
        self.api = api
        self.model = model
        self.exact_lengths = exact_lengths
        self.lengths_enforced = exact_lengths
        self.greedy = greedy
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(request_timeout_s, connect=min(request_timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    def close(self) -> None:
        self._client.close()

    def body(self, prompt: str, max_tokens: int, with_lengths: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0 if self.greedy else 1.0,
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if with_lengths:
            body["ignore_eos"] = True
            body["min_tokens"] = max_tokens
        return body

    def stream(self, prompt: str, max_tokens: int, cancel: threading.Event) -> Streamed:
        """Send one request and read its stream to the end. Raises ``EndpointError``."""
        with self._lock:
            with_lengths = self.lengths_enforced
        try:
            return self._stream(prompt, self.body(prompt, max_tokens, with_lengths), cancel)
        except _Refused as refused:
            if not with_lengths:
                raise EndpointError(refused.message) from None
        with self._lock:
            self.lengths_enforced = False
        try:
            return self._stream(prompt, self.body(prompt, max_tokens, False), cancel)
        except _Refused as refused:
            raise EndpointError(refused.message) from None

    def count_tokens(self, text: str) -> int:
        """How many tokens the server makes of ``text`` (``COUNT_PATH``; for a stream
        without a usage report). Raises ``EndpointError`` when the server cannot say."""
        url = f"{self.base_url}{COUNT_PATH}"
        why = "its streams carry no usage report (stream_options.include_usage), so lem"
        try:
            response = self._client.post(COUNT_PATH, json={"model": self.model, "input": text})
        except httpx.HTTPError as error:
            raise EndpointError(
                f"{why} asks POST {url} for the input tokens: {type(error).__name__}: {error}"
            ) from None
        if response.status_code != 200:
            raise EndpointError(
                f"{why} asks POST {url} for the input tokens: HTTP {response.status_code} "
                "(a server with neither cannot be measured)"
            )
        try:
            count = response.json().get("count")
        except (ValueError, AttributeError):
            count = None
        if not isinstance(count, int) or count < 0:
            raise EndpointError(f"POST {url}: no token count in {response.text[:200]!r}")
        return count

    def _stream(self, prompt: str, body: dict[str, Any], cancel: threading.Event) -> Streamed:
        start_s = time.perf_counter()
        streamed = Streamed(start_s, prompt)
        url = f"{self.base_url}{self.path}"
        try:
            with self._client.stream("POST", self.path, json=body) as response:
                if response.status_code != 200:
                    text = response.read().decode("utf-8", "replace")[:500]
                    message = f"POST {url}: HTTP {response.status_code}: {text.strip()}"
                    if response.status_code in (400, 422) and body.get("ignore_eos"):
                        raise _Refused(message)
                    raise EndpointError(message)
                done = self._read_events(
                    response.iter_lines(), streamed, cancel, body["max_tokens"]
                )
        except httpx.TimeoutException as error:
            raise EndpointError(f"POST {url}: timed out ({type(error).__name__})") from None
        except httpx.HTTPError as error:
            raise EndpointError(f"POST {url}: {type(error).__name__}: {error}") from None
        if not done:
            raise EndpointError(
                f"POST {url}: malformed stream: it ended without a usage report "
                "(stream_options.include_usage) or a finish_reason: cut short (e.g. a "
                "llama-cpp-python server interrupts a request when another arrives, "
                "unless started with --interrupt_requests false)"
            )
        return streamed

    def _read_events(
        self, lines: Any, streamed: Streamed, cancel: threading.Event, max_tokens: int
    ) -> bool:
        """Read the server-sent events into ``streamed`` up to ``[DONE]`` or the stream's
        end; whether it was whole: a usage report came, or a finish_reason (some servers,
        ``transformers serve``, send no ``[DONE]``: a stream cut short fails in httpx,
        or here)."""
        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        for line in lines:
            now_s = time.perf_counter()
            if cancel.is_set():
                raise Cancelled("cancelled while a request was streaming")
            if not line or line.startswith(":"):
                continue
            if not line.startswith("data:"):
                continue  # event:, id:, retry: lines carry nothing lem reads
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError:
                raise EndpointError(f"malformed stream: not JSON: {data[:200]!r}") from None
            if not isinstance(event, dict):
                raise EndpointError(f"malformed stream: not an object: {data[:200]!r}")
            if "error" in event:
                raise EndpointError(f"the server reported an error: {str(event['error'])[:300]}")
            streamed.end_s = now_s
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            if _has_text(event.get("choices")):
                streamed.chunk_times_s.append(now_s)
            finish_reason = _finish_reason(event.get("choices")) or finish_reason
        if usage is not None:
            streamed.completion_tokens = _count(usage, "completion_tokens")
            streamed.prompt_tokens = _count(usage, "prompt_tokens")
        elif finish_reason is not None:
            streamed.usage_reported = False
            streamed.prompt_tokens = None
            streamed.completion_tokens = (
                max_tokens if finish_reason == "length" else len(streamed.chunk_times_s)
            )
        else:
            return False
        if streamed.completion_tokens == 0:
            raise EndpointError(
                "the server generated no token for a request (it stopped at once; a server "
                "that ignores ignore_eos/min_tokens may)"
            )
        return True


class _Refused(EndpointError):
    """HTTP 400/422 to a request with the exact-length fields (retried without them)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    if not isinstance(value, int) or value < 0:
        raise EndpointError(f"malformed stream: usage.{name} is {value!r}")
    return value


def _has_text(choices: Sequence[Any] | None) -> bool:
    """Whether a chunk's choices carry generated text (completions' ``text``, chat's
    ``delta.content``)."""
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta.get("content"):
            return True
    return False


def _finish_reason(choices: Sequence[Any] | None) -> str | None:
    """The first choice's ``finish_reason`` when the chunk sets one."""
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            return str(choice["finish_reason"])
    return None
