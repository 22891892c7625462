"""Engine-environment locks: the pins a lock gives an environment, what an environment has
other than its lock, and which lock a result names (``protocol/env_locks.py``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lem.protocol import env_locks
from lem.protocol.env_locks import differences, environment_facts, lock_pins, lock_status

REPO = Path(__file__).resolve().parents[1]
LINUX_311 = {
    "sys_platform": "linux", "platform_machine": "x86_64", "python_full_version": "3.11.7",
    "python_version": "3.11", "implementation_name": "cpython",
}  # fmt: skip
LOCK = """\
# a comment
--extra-index-url https://download.pytorch.org/whl/cpu
numpy==2.4.6 ; python_full_version < '3.12' and sys_platform == 'linux' \\
    --hash=sha256:aa \\
    --hash=sha256:bb
numpy==2.5.5 ; python_full_version >= '3.12' and sys_platform == 'linux' \\
    --hash=sha256:cc
torch==2.13.0+cpu \\
    --hash=sha256:dd
Typing_Extensions==4.16.0 ; sys_platform == 'linux' \\
    --hash=sha256:ee
cffi==2.1.1 ; implementation_name == 'pypy' \\
    --hash=sha256:ff
"""


def test_pins_follow_the_markers_of_the_environment() -> None:
    assert lock_pins(LOCK, LINUX_311) == {
        "numpy": "2.4.6", "torch": "2.13.0+cpu", "typing-extensions": "4.16.0",
    }  # fmt: skip
    py313 = {**LINUX_311, "python_full_version": "3.13.1", "python_version": "3.13"}
    assert lock_pins(LOCK, py313)["numpy"] == "2.5.5"


def test_differences_name_versions_missing_and_extra_but_not_installers() -> None:
    pins = {"numpy": "2.4.6", "torch": "2.13.0+cpu", "filelock": "4.3.2"}
    installed = {"numpy": "2.4.6", "torch": "2.13.0", "pip": "26.0", "pytest": "9.0"}
    assert differences(pins, installed) == [
        "missing: filelock==4.3.2",
        "torch: 2.13.0 installed, lock has 2.13.0+cpu",  # a CUDA build is not the CPU lock
        "extra: pytest==9.0",
    ]
    assert differences(pins, {**pins, "setuptools": "80"}) == []
    assert env_locks.summarise(differences(pins, installed)) == (
        "1 version(s) differ, 1 missing, 1 extra"
    )


def facts_for(lock_name: str, made_from: dict[str, str] | None = None) -> dict[str, object]:
    text = (REPO / "envs" / lock_name / "requirements.txt").read_text()
    return {
        "distributions": lock_pins(text, LINUX_311),
        "markers": LINUX_311,
        "made_from": made_from,
    }


def sha(lock_name: str) -> str:
    return hashlib.sha256((REPO / "envs" / lock_name / "requirements.txt").read_bytes()).hexdigest()


def test_an_environment_exactly_its_lock_matches_and_is_named_by_hash() -> None:
    for name in ("pytorch", "pytorch-cpu"):
        status = lock_status("pytorch", facts_for(name))
        assert (status.name, status.sha256, status.matches, status.made_from) == (
            name, sha(name), True, False,
        )  # fmt: skip
    marker = {"lock": "vllm", "lock_sha256": sha("vllm")}
    status = lock_status("vllm", facts_for("vllm", marker))
    assert (status.name, status.matches, status.made_from, status.differences) == (
        "vllm", True, True, [],
    )  # fmt: skip


def test_a_changed_lock_or_a_changed_environment_does_not_match() -> None:
    marker = {"lock": "pytorch-cpu", "lock_sha256": "0" * 64}  # made from an older lock
    status = lock_status("pytorch", facts_for("pytorch-cpu", marker))
    assert status.sha256 == "0" * 64 and status.matches is False
    assert status.differences[0].startswith("lock changed since this environment was made")
    facts = facts_for("pytorch-cpu")
    facts["distributions"] = {**facts["distributions"], "torch": "2.11.0"}  # type: ignore[dict-item]
    status = lock_status("pytorch", facts)
    assert status.matches is False and status.name == "pytorch-cpu"
    assert status.differences == ["torch: 2.11.0 installed, lock has 2.13.0+cpu"]
    assert status.summary == "1 version(s) differ"


def test_a_backend_without_a_lock_and_a_custom_file_say_why() -> None:
    status = lock_status("tensorrt", facts_for("vllm"))
    assert status.name is None and status.matches is None
    assert status.unavailable_reason is not None
    assert status.unavailable_reason.startswith("no lock (tensorrt: `uv lock` failed here")
    custom = lock_status("pytorch", facts_for("pytorch", {"lock": "custom", "lock_sha256": "ab"}))
    assert (custom.name, custom.sha256, custom.matches) == ("custom", "ab", None)


def test_the_facts_script_runs_without_lem(tmp_path: Path) -> None:
    """Run as a script with -I (no lem on the path), it reports this interpreter."""
    done = subprocess.run(
        [sys.executable, "-I", env_locks.__file__],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    facts = json.loads(done.stdout)
    assert (
        facts["markers"]["python_full_version"]
        == environment_facts()["markers"]["python_full_version"]
    )
    assert facts["distributions"]["msgspec"] == environment_facts()["distributions"]["msgspec"]


@pytest.mark.parametrize("name", ["pytorch", "pytorch-cpu", "vllm"])
def test_every_shipped_lock_pins_every_entry_with_hashes(name: str) -> None:
    """A lock pip installs with --require-hashes: every requirement exact and hashed."""
    text = (REPO / "envs" / name / "requirements.txt").read_text()
    entries = [e for e in text.replace("\\\n", " ").splitlines() if e and e[0].isalnum()]
    assert entries
    for entry in entries:
        assert "==" in entry.split(";")[0] and "--hash=sha256:" in entry, entry
    if name == "pytorch-cpu":
        assert "torch==2.13.0+cpu" in text
        assert not [e for e in entries if e.startswith(("nvidia-cu", "triton", "cuda-"))]
