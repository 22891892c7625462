"""The TensorRT-LLM backend on CPU without TensorRT-LLM: registration, lazy imports, a
clean refusal, and whole runs through a stand-in ``LLM`` (streamed steps of a few tokens)
that check the engine cache decisions, the window edges and the token stamps. The real
engine has never run here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from lem.protocol.config import ExperimentConfig
from lem.workers.engines.base import BackendError, Cancelled
from lem.workers.engines.tensorrt.engine import TensorRtBackend, TrtApi
from lem.workers.engines.tensorrt.engine_cache import MANIFEST_NAME
from lem.workers.runtime.main import BACKENDS


def test_the_worker_knows_the_tensorrt_backend_and_imports_no_engine_library() -> None:
    tensorrt = BACKENDS["tensorrt"]
    assert tensorrt.entry_point == "lem.workers.engines.tensorrt.engine:TensorRtBackend"
    assert tensorrt.environment.worker_distribution == "tensorrt_llm"
    code = (
        "import sys, lem.workers.engines.tensorrt.engine\n"
        "print(sorted(m for m in ('tensorrt_llm', 'torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_tensorrt_llm_the_backend_refuses_in_one_line() -> None:
    pytest.importorskip("torch")
    found = subprocess.run([sys.executable, "-c", "import tensorrt_llm"], capture_output=True)
    if found.returncode == 0:
        pytest.skip("tensorrt_llm is importable here")
    with pytest.raises(BackendError) as refused:
        TensorRtBackend().initialise([])
    message = str(refused.value)
    assert message.startswith(
        "the tensorrt backend needs the tensorrt_llm package in this worker's Python"
    )
    assert "LEM_TENSORRT_PYTHON" in message and "\n" not in message


class Recorder:
    """A stand-in TensorRT-LLM config class (and SamplingParams): keeps its arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeResult:
    """A streamed request: each ``async for`` step brings up to ``per_step`` more tokens
    (all tokens so far in ``outputs[0].token_ids``, as TensorRT-LLM gives them)."""

    def __init__(self, prompt: list[int], params: Recorder, per_step: int) -> None:
        self.prompt, self.target = prompt, int(params.kwargs["max_tokens"])
        self.per_step = per_step
        self.outputs = [SimpleNamespace(token_ids=[])]
        self.finished = False
        self.aborted = False

    def __aiter__(self) -> FakeResult:
        return self

    async def __anext__(self) -> FakeResult:
        if self.finished:
            raise StopAsyncIteration
        await asyncio.sleep(0.001)  # one engine step
        tokens = self.outputs[0].token_ids
        tokens.extend([7] * min(self.per_step, self.target - len(tokens)))
        self.finished = len(tokens) == self.target
        return self

    def abort(self) -> None:
        self.aborted, self.finished = True, True


class FakeLLM:
    """The engine-flow ``LLM``: notes how it was made, saves a fake engine, streams."""

    made: list[FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.results: list[FakeResult] = []
        self.shut_down = False
        FakeLLM.made.append(self)

    def save(self, engine_dir: str) -> None:
        Path(engine_dir).mkdir(parents=True)
        (Path(engine_dir) / "config.json").write_text(json.dumps({"from": self.kwargs["model"]}))

    def generate_async(self, prompt: list[int], sampling_params: Recorder, streaming: bool) -> Any:
        assert streaming and all(isinstance(token, int) for token in prompt)
        self.results.append(FakeResult(prompt, sampling_params, per_step=2))
        return self.results[-1]

    def shutdown(self) -> None:
        self.shut_down = True


NAMESPACE = SimpleNamespace(
    SamplingParams=Recorder, BuildConfig=Recorder, KvCacheConfig=Recorder,
    QuantConfig=Recorder, CalibConfig=Recorder, QuantAlgo=SimpleNamespace(FP8="FP8-member"),
)  # fmt: skip


class Window:
    """Measurement window edges, stamped; ``on_begin`` runs at the begin edge."""

    def __init__(self, on_begin: Any = None) -> None:
        self.begun_s: float | None = None
        self.ended_s: float | None = None
        self.on_begin = on_begin

    def begin(self) -> None:
        self.begun_s = time.perf_counter()
        if self.on_begin:
            self.on_begin()

    def end(self) -> None:
        self.ended_s = time.perf_counter()


def backend() -> TensorRtBackend:
    api = TrtApi(FakeLLM, NAMESPACE, "1.0.0-fake")
    made = TensorRtBackend(api)
    made.use_devices(api, ["GPU-0"], ["Fake GPU (sm_90)"])
    return made


def trt_config(tmp_path: Path, **fields: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "backend": "tensorrt", "model": {"source": "builtin", "seed": 1}, "batch_size": 2,
        "num_prompts": 5, "input_tokens": 8, "output_tokens": 5, "warmup_batches": 1,
        "tensorrt": {"engine_cache_dir": str(tmp_path / "engines")}, **fields,
    }  # fmt: skip
    return msgspec.convert(data, ExperimentConfig)


def no_phase(phase: str, detail: str = "") -> None:
    del phase, detail


def test_a_run_builds_the_engine_then_reuses_it_and_a_new_worker_loads_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the random-weight checkpoint is written with transformers
    FakeLLM.made.clear()
    config, first = trt_config(tmp_path), backend()
    window = Window()
    stats = first.run(config, window, threading.Event(), no_phase)
    built = FakeLLM.made[0]
    checkpoint = Path(built.kwargs["model"])
    assert checkpoint.name == "lem-tiny-bfloat16-seed1"
    assert (checkpoint / "config.json").is_file() and (checkpoint / "model.safetensors").is_file()
    assert built.kwargs["build_config"].kwargs["max_seq_len"] == 13
    assert built.kwargs["skip_tokenizer_init"] is True and first.last_engine_hit is False
    engine_folder = tmp_path / "engines" / str(first.last_engine_key)
    assert (engine_folder / MANIFEST_NAME).is_file() and (engine_folder / "engine").is_dir()
    assert (stats.model_reused, stats.model_load_count, stats.repetitions) == (False, 1, 1)
    assert (stats.num_prompts, stats.output_tokens, stats.input_tokens) == (5, 25, 40)
    assert stats.warmup_batches == 1 and len(built.results) == 2 + 5  # warmup, then a pass
    assert stats.latency_unavailable_reason is None and len(stats.timed_requests) == 5
    assert window.begun_s is not None and window.ended_s is not None
    for request in stats.timed_requests:
        times = list(request.token_times_s)
        assert len(times) == 5 and times == sorted(times)
        assert window.begun_s <= request.start_s <= times[0] <= times[-1] <= window.ended_s
        assert times[0] == times[1] and times[1] < times[2]  # two tokens a step share a stamp
    again = first.run(config, Window(), threading.Event(), no_phase)
    assert (again.model_reused, again.model_load_s, len(FakeLLM.made)) == (True, 0.0, 1)
    first.close()
    assert built.shut_down
    second = backend()  # another worker: the engine comes from the cache, not a build
    second.run(config, Window(), threading.Event(), no_phase)
    loaded = FakeLLM.made[1]
    assert loaded.kwargs["model"] == str(engine_folder / "engine") and second.last_engine_hit
    assert "build_config" not in loaded.kwargs
    second.close()


def test_a_new_engine_setting_shuts_the_old_engine_and_builds_anew(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    FakeLLM.made.clear()
    runner = backend()
    runner.run(trt_config(tmp_path), Window(), threading.Event(), no_phase)
    fp8 = trt_config(tmp_path, tensorrt={"engine_cache_dir": str(tmp_path / "engines"),
                                         "quantization": "fp8"})  # fmt: skip
    runner.run(fp8, Window(), threading.Event(), no_phase)
    assert FakeLLM.made[0].shut_down and len(FakeLLM.made) == 2
    assert FakeLLM.made[1].kwargs["quant_config"].kwargs["quant_algo"] == "FP8-member"
    assert len(list((tmp_path / "engines").glob(f"*/{MANIFEST_NAME}"))) == 2
    runner.close()


def test_window_repeats_passes_and_the_prefill_window_asks_one_token(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    FakeLLM.made.clear()
    runner = backend()
    config = trt_config(tmp_path, min_iterations=3, warmup_batches=0)
    stats = runner.run(config, Window(), threading.Event(), no_phase, prefill_window=Window())
    assert (stats.repetitions, stats.num_prompts, stats.output_tokens) == (3, 15, 75)
    assert [r.pass_index for r in stats.timed_requests] == [0] * 5 + [1] * 5 + [2] * 5
    assert stats.prefill_repetitions == 3 and stats.prefill_duration_s is not None
    prefill = FakeLLM.made[0].results[15:]
    assert len(prefill) == 15 and {len(r.outputs[0].token_ids) for r in prefill} == {1}
    runner.close()


def test_cancel_inside_the_window_aborts_the_pass(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    FakeLLM.made.clear()
    runner, cancel = backend(), threading.Event()
    with pytest.raises(Cancelled, match="cancelled during a TensorRT-LLM pass"):
        runner.run(trt_config(tmp_path, warmup_batches=0), Window(cancel.set), cancel, no_phase)
    assert any(result.aborted for result in FakeLLM.made[0].results)
    runner.close()


def test_refusals_before_any_engine_starts(tmp_path: Path) -> None:
    FakeLLM.made.clear()
    with pytest.raises(BackendError, match=r"^initialise\(\) must run before run\(\)$"):
        TensorRtBackend().run(trt_config(tmp_path), Window(), threading.Event(), no_phase)
    api = TrtApi(FakeLLM, NAMESPACE, "1.0.0-fake")
    gpuless = TensorRtBackend(api)
    gpuless.use_devices(api, [], [])
    with pytest.raises(BackendError, match=r"^device: the tensorrt backend needs a GPU"):
        gpuless.run(trt_config(tmp_path), Window(), threading.Event(), no_phase)
    never = trt_config(tmp_path, tensorrt={"engine_cache_dir": str(tmp_path / "empty"),
                                           "build_engine": "never"})  # fmt: skip
    with pytest.raises(BackendError, match=r"^tensorrt.build_engine: 'never', and no engine"):
        backend().run(never, Window(), threading.Event(), no_phase)
    missing = trt_config(tmp_path, model={"source": "hf", "path": str(tmp_path / "nowhere")})
    with pytest.raises(BackendError, match=r"^model.path: no model folder at "):
        backend().run(missing, Window(), threading.Event(), no_phase)
    assert FakeLLM.made == []
