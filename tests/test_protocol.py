"""Every protocol message round-trips through the one codec; bad frames are refused."""

from __future__ import annotations

import typing

import msgspec
import pytest

from lem.protocol.codec import (
    ProtocolError,
    VersionMismatch,
    check_version,
    decode_command,
    decode_event,
    encode,
)
from lem.protocol.config import ExperimentConfig, ModelConfig
from lem.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Cancel,
    Command,
    CoordinatorHeartbeat,
    Error,
    Event,
    Go,
    Heartbeat,
    Hello,
    Ping,
    Pong,
    Progress,
    Ready,
    Refuse,
    Result,
    Run,
    Shutdown,
)
from lem.protocol.results import (
    Energy,
    Environment,
    GpuEnergy,
    GpuInfo,
    Measurement,
    Memory,
    Preparation,
    Work,
)

GPU = GpuInfo(
    index=0,
    uuid="GPU-1234",
    name="NVIDIA H100 80GB HBM3",
    memory_total_mib=81559.0,
    power_limit_w=700.0,
    energy_counter_supported=True,
    mig_mode_enabled=False,
)
ENV = Environment(
    hostname="h",
    python_version="3.11.7",
    lem_version="0.1.0",
    protocol_version=1,
    backend="pytorch",
    backend_version="5.17.0",
    packages={"torch": "2.11.0"},
    device="cuda",
    gpus=[GPU],
    driver_version="580.159.04",
    cuda_version="13.0",
)
MEASUREMENT = Measurement(
    experiment_id="e-1",
    cycle=2,
    worker_id="w1",
    started_at_unix_s=1.5,
    device="cuda",
    work=Work(
        duration_s=10.25,
        num_prompts=8,
        batches=2,
        input_tokens=256,
        output_tokens=256,
        output_tokens_per_s=24.97,
    ),
    energy=Energy(
        energy_j=None,
        energy_unavailable_reason="no NVML",
        energy_per_output_token_j=None,
        avg_power_w=None,
        gpu_energy=[GpuEnergy(gpu_uuid="GPU-1234", energy_j=1234.5, method="nvml_energy_counter")],
    ),
    memory=Memory(
        peak_gpu_memory_load_mib=2400.0,
        peak_gpu_memory_inference_mib=None,
        gpu_memory_unavailable_reason="cpu",
    ),
    preparation=Preparation(
        model_load_s=3.0, model_reused=True, model_load_count=1, warmup_batches=1
    ),
    environment=ENV,
)

COMMANDS: list[Command] = [
    Accept(heartbeat_interval_s=1.0, coordinator_timeout_s=30.0),
    Refuse(reason="protocol v2 != v1"),
    Run(
        experiment_id="e-1",
        cycle=0,
        config=ExperimentConfig(
            batch_size=8, model=ModelConfig(source="random", name="llama-3.2-1b", dtype="bfloat16")
        ),
    ),
    Run(
        experiment_id="e-1",
        cycle=1,
        config=ExperimentConfig(gpu_count=1, num_prompts=3),
        start_barrier=True,
        shard_index=1,
        shard_count=2,
        shard_group="a1b2",
    ),
    Go(experiment_id="e-1"),
    Cancel(experiment_id="e-1"),
    Shutdown(reason="done"),
    CoordinatorHeartbeat(sent_at_unix_s=12.5),
    Ping(seq=7, payload=b"\x00\x01"),
]
EVENTS: list[Event] = [
    Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="w1",
        pid=42,
        backend="pytorch",
        python_executable="/usr/bin/python3",
        python_version="3.11.7",
        lem_version="0.1.0",
        packages={"msgspec": "0.19"},
        visible_gpus=[GPU],
        cuda_visible_devices="GPU-1234",
    ),
    Ready(worker_id="w1", environment=ENV, init_duration_s=2.5),
    Heartbeat(worker_id="w1", sent_at_unix_s=3.0, busy_experiment_id="e-1"),
    Progress(worker_id="w1", experiment_id="e-1", phase="warmup", detail="1 batch"),
    Result(worker_id="w1", measurement=MEASUREMENT),
    Error(
        worker_id="w1",
        experiment_id=None,
        kind="RuntimeError",
        message="boom",
        traceback="tb",
        fatal=True,
    ),
    Pong(seq=7, payload=b"xy"),
]


def test_every_command_and_event_type_is_covered() -> None:
    assert {type(c) for c in COMMANDS} == set(typing.get_args(Command))
    assert {type(e) for e in EVENTS} == set(typing.get_args(Event))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_round_trips(command: Command) -> None:
    assert decode_command(encode(command)) == command


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips(event: Event) -> None:
    decoded = decode_event(encode(event))
    assert decoded == event
    assert type(decoded) is type(event)


def test_an_event_is_not_a_command() -> None:
    with pytest.raises(ProtocolError):
        decode_command(encode(EVENTS[0]))


def test_garbage_frames_are_refused() -> None:
    with pytest.raises(ProtocolError):
        decode_event(b"\xc1not msgpack")
    with pytest.raises(ProtocolError):
        decode_event(msgspec.msgpack.encode({"type": "hello", "worker_id": 3}))


def test_messages_are_frozen() -> None:
    accept = Accept(heartbeat_interval_s=1.0, coordinator_timeout_s=30.0)
    with pytest.raises(AttributeError):
        accept.heartbeat_interval_s = 2.0  # type: ignore[misc]


def test_version_mismatch_is_refused_with_a_clear_message() -> None:
    check_version(PROTOCOL_VERSION, "worker w1")
    with pytest.raises(
        VersionMismatch, match=r"worker w1 speaks lem protocol v99 .* install the same lem"
    ):
        check_version(99, "worker w1")
