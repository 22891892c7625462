"""The openai backend on streams recorded from llama.cpp's server (llama-cpp-python 0.3.36,
SmolLM2-135M: ``tests/data/llama_cpp/README.md``), replayed by a local HTTP server.

That server's streams carry no usage report: lem counts the output tokens (finish_reason
``length`` means ``max_tokens``; else one a chunk), asks its ``/extras/tokenize/count``
for the input tokens (once per text, when the results are read) and flags
``usage_not_reported``; a stream with neither usage nor a finish_reason was cut short (as
the server cuts one when another request arrives, by default) and fails. A server that
takes ``min_tokens`` and still stops short is flagged ``output_length_not_enforced``.
Fast: no model, no llama-cpp-python.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.openai.client import EndpointError
from lem.workers.engines.openai.engine import OpenAiBackend

RECORDED = Path(__file__).parent / "data" / "llama_cpp"
PROMPT = "the of and to in is was for"  # the recorded completion's prompt: 8 tokens


@dataclass
class Replay:
    """What the replaying server at ``url`` answers: a stream per API path, the token
    count (None: no count endpoint), and the requests it got."""

    url: str
    streams: dict[str, bytes] = field(default_factory=dict)
    count: int | None = 8
    posts: list[tuple[str, dict[str, object]]] = field(default_factory=list)


class _Server(http.server.ThreadingHTTPServer):
    replay: Replay


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        found = self.path == "/v1/models"  # as llama.cpp's: no /health
        self._answer(200 if found else 404, b'{"data": []}' if found else b"{}")

    def do_POST(self) -> None:
        replay = self.server.replay
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        replay.posts.append((self.path, body))
        if self.path in replay.streams:
            self._answer(200, replay.streams[self.path], "text/event-stream")
        elif self.path == "/extras/tokenize/count" and replay.count is not None:
            self._answer(200, json.dumps({"count": replay.count}).encode())
        else:
            self._answer(404, b'{"detail": "Not Found"}')


@pytest.fixture
def serve() -> Iterator[Replay]:
    server = _Server(("127.0.0.1", 0), _Handler)
    replay = server.replay = Replay(f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield replay
    server.shutdown()
    server.server_close()


def _no_phase(phase: str, detail: str = "") -> None:
    pass


def backend_for(replay: Replay, api: str = "completions") -> OpenAiBackend:
    config = msgspec.convert(
        {"backend": "openai", "device": "cpu", "openai": {"url": replay.url, "api": api}},
        ExperimentConfig,
    )
    backend = OpenAiBackend()
    backend.initialise([])
    backend.load(config, _no_phase)
    return backend


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def test_a_stream_without_usage_is_counted_and_flagged(serve: Replay) -> None:
    serve.streams["/v1/completions"] = recorded("completions_min_tokens_8.sse")
    backend = backend_for(serve)
    try:
        streamed = [backend.request(PROMPT, 8, threading.Event()) for _ in range(2)]
        # finish_reason length: max_tokens, one chunk each (no merged stamps)
        assert [s.completion_tokens for s in streamed] == [8, 8]
        assert not any(s.chunks_not_tokens for s in streamed)
        assert len(streamed[0].token_times_s()) == 8
        assert backend.run_flags() == ["usage_not_reported"]
        assert [path for path, _ in serve.posts] == ["/v1/completions"] * 2  # none counted yet
        # input tokens: the server's count, asked once for the text, when results are read
        assert [backend.input_tokens(s) for s in streamed] == [8, 8]
        counts = [body for path, body in serve.posts if path == "/extras/tokenize/count"]
        assert [body["input"] for body in counts] == [PROMPT]
        # the exact-length fields were sent (llama.cpp honours min_tokens)
        sent = serve.posts[0][1]
        assert sent["min_tokens"] == 8 and sent["max_tokens"] == 8
    finally:
        backend.close()


def test_a_stream_that_stops_short_of_min_tokens_is_flagged(serve: Replay) -> None:
    """Recorded with min_tokens 6 and max_tokens 40: it stopped (EOS) after 31 tokens.
    Asked for 40 exactly, lem counts one token a chunk and says the length was not kept."""
    serve.streams["/v1/chat/completions"] = recorded("chat_min_tokens_6_of_40.sse")
    backend = backend_for(serve, "chat")
    try:
        streamed = backend.request("Say hi", 40, threading.Event())
        assert streamed.completion_tokens == 31  # the role-only first chunk carries no text
        assert backend.run_flags() == ["output_length_not_enforced", "usage_not_reported"]
    finally:
        backend.close()


def test_no_usage_and_no_count_endpoint_fails_with_the_reason(serve: Replay) -> None:
    serve.streams["/v1/completions"] = recorded("completions_min_tokens_8.sse")
    serve.count = None
    backend = backend_for(serve)
    try:
        streamed = backend.request(PROMPT, 8, threading.Event())
        with pytest.raises(EndpointError, match=r"no usage report.*tokenize/count.*HTTP 404"):
            backend.input_tokens(streamed)
    finally:
        backend.close()


def _first_events(count: int) -> bytes:
    events = recorded("completions_min_tokens_8.sse").split(b"\n\n")
    return b"\n\n".join(events[:count]) + b"\n\n"


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(_first_events(3), id="cut-short"),
        # recorded: a second request arrived while this one streamed (the server's default
        # interrupt_requests): one token, then [DONE] without a finish_reason
        pytest.param(recorded("completions_interrupted.sse"), id="interrupted"),
    ],
)
def test_a_stream_without_usage_or_finish_reason_fails(serve: Replay, stream: bytes) -> None:
    """Not counted: a stream that never says why it finished was cut short."""
    serve.streams["/v1/completions"] = stream
    backend = backend_for(serve)
    try:
        why = r"ended without a usage report.*cut short.*--interrupt_requests false"
        with pytest.raises(EndpointError, match=why):
            backend.request(PROMPT, 8, threading.Event())
    finally:
        backend.close()
