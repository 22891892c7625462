"""The OpenAI-compatible server engine (``backend: openai``): lem drives an inference
server over HTTP
(``/v1/completions`` or ``/v1/chat/completions``, streaming), either one it starts from a
command (start mode) or one already running at a URL (attach mode). Its ``openai:``
section, the section's checks and its ``SPEC`` (``lem.protocol.engines.spec``).

CUDA-free and HTTP-free: the coordinator checks these before any worker starts. Only
``backend: openai`` reads the section.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from lem.protocol.engines.spec import (
    EngineEnvironment,
    EngineSpec,
    Experiment,
    ModeSupport,
    Problem,
)

NAME = "openai"
PORT_PLACEHOLDER = "{port}"

Api = Literal["completions", "chat"]


class OpenAiConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings only the openai backend reads. Seconds for every ``*_s``.

    Exactly one of:
    - ``command``: start mode. The server's command line (e.g. ``["vllm", "serve",
      "/models/m", "--port", "{port}"]``); ``{port}`` in any argument is replaced by a free
      TCP port lem picks on 127.0.0.1. It runs in its own process group with
      ``CUDA_VISIBLE_DEVICES`` set to the GPUs lem assigned (by UUID), its output in a log
      beside the worker's; lem stops the whole group when the worker is done with it.
      ``environment``: a folder whose ``bin/`` (a venv's) or itself is put first on the
      command's ``PATH``.
    - ``url``: attach mode (``http://host:port``). No process is started; ``gpu_uuids``
      names the GPUs the server runs on (they must be the GPUs lem assigned the worker,
      whose counters it reads; required for energy on GPUs).

    ``api``: ``completions`` (``/v1/completions``) or ``chat`` (``/v1/chat/completions``).
    ``served_model``: the ``model`` sent in requests (default ``model.path``, else
    ``model.name``). ``ready_path``: polled until it answers 200 (default ``/health``,
    then ``/v1/models``), for at most ``ready_timeout_s``. ``request_timeout_s``: the
    longest a request may go without a byte from the server. ``stop_grace_s``: how long
    a started server has between SIGTERM and SIGKILL.
    """

    command: list[str] | None = None
    url: str | None = None
    gpu_uuids: list[str] = msgspec.field(default_factory=list)
    api: Api = "completions"
    served_model: str | None = None
    environment: str | None = None
    ready_path: str | None = None
    ready_timeout_s: float = 600.0
    request_timeout_s: float = 300.0
    stop_grace_s: float = 10.0


def section_problems(config: Experiment, section: OpenAiConfig) -> list[Problem]:
    """Problems of the ``openai`` section; none for other backends."""
    if config.backend != NAME:
        return []
    problems: list[Problem] = []
    if (section.command is None) == (section.url is None):
        problems.append(
            ("openai.command",
             "set exactly one of openai.command (lem starts the server) and openai.url "
             "(lem attaches to a running one)")
        )  # fmt: skip
    if section.command is not None and not section.command:
        problems.append(("openai.command", "must name a program, got an empty list"))
    if section.url is not None and not section.url.startswith(("http://", "https://")):
        problems.append(("openai.url", f"must start with http:// or https://, got {section.url!r}"))
    if section.command is not None and section.gpu_uuids:
        problems.append(
            ("openai.gpu_uuids",
             "is for openai.url only: a started server runs on the GPUs lem assigns")
        )  # fmt: skip
    if section.environment is not None and section.command is None:
        problems.append(("openai.environment", "is for openai.command only"))
    if section.ready_path is not None and not section.ready_path.startswith("/"):
        problems.append(("openai.ready_path", f"must start with /, got {section.ready_path!r}"))
    for name in ("ready_timeout_s", "request_timeout_s"):
        if getattr(section, name) <= 0:
            problems.append((f"openai.{name}", f"must be > 0, got {getattr(section, name)}"))
    if section.stop_grace_s < 0:
        problems.append(("openai.stop_grace_s", f"must be >= 0, got {section.stop_grace_s}"))
    return problems


def hashed(config: Experiment, section: dict[str, Any]) -> dict[str, Any] | None:
    """Hashed for experiments of this engine only; timeouts change no measurement."""
    if config.backend != NAME:
        return None
    for name in ("ready_timeout_s", "request_timeout_s", "stop_grace_s", "ready_path"):
        section.pop(name, None)
    return section


SPEC = EngineSpec(
    name=NAME,
    section=OpenAiConfig,
    entry_point="lem.workers.engines.openai.engine:OpenAiBackend",
    environment=EngineEnvironment(
        locks=("openai",),
        distributions=("httpx",),
        probe_imports=("httpx",),
        engine_distribution="httpx",
        worker_distribution="httpx",
        missing_hint="the openai worker needs httpx (pip install httpx)",
    ),
    modes={
        "offline": ModeSupport(
            "the whole prompt set sent to the server's OpenAI API at once, at most "
            "batch_size requests in flight"
        ),
        "server": ModeSupport(
            "lem's arrival process or concurrency limit, one streaming request over the "
            "server's OpenAI API each"
        ),
    },
    problems=section_problems,
    hashed=hashed,
)
