"""Command lines over lem's command tree for the fuzz tests, and the stores they read.

Only commands that read (or write only their named output) are generated: ``campaign``
always has ``--dry-run`` right after it, ``doctor`` ``--variables``; ``run``, ``resume``
and ``env sync`` are never run. Output paths stay inside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from hypothesis import strategies as st

from tests.fuzz.harness import Sandbox
from tests.fuzz.strategies import FIELDS, arg_text, set_item

GLOBAL_FLAGS = ["--log-json", "-v", "--verbose", "-q", "--quiet"]
OPTIONS = [
    "--set", "--limit", "--experiment", "--show", "--resume", "--force", "--max-attempts",
    "--store", "--store-b", "--gpus", "--max-parallel", "--endpoint", "--format", "--level",
    "-o", "--output", "--alpha", "--ignore", "--json", "--variables", "--dry-run", "-h",
    "--help", "--", "-",
]  # fmt: skip
SPECIAL_PATHS = ("/dev/null", "/dev/zero")
STORE_KINDS = (
    "real", "missing", "directory", "fifo", "dev_null", "dev_zero", "empty", "random",
    "truncated", "corrupted", "read_only", "read_only_folder", "foreign", "symlink",
    "dangling_symlink",
)  # fmt: skip
# A store's kind, where to cut or damage a copy of a real one (0..1), bytes to write there
StoreKind = tuple[str, float, bytes]
OUTPUTS = ("out.csv", "out.json", "out.parquet", "out", "sub/out.csv", "-", "report", "o\x1b[1m")


def make_store(box: Sandbox, real: Path, store: StoreKind) -> str:
    """A store of ``store``'s kind in ``box.work`` (a copy of ``real``, cut or overwritten
    with noise at the fraction ``cut``, or something else); its path as given to lem."""
    kind, cut, noise = store
    work = box.work
    path = work / "stores" / kind / "lem.db"
    path.parent.mkdir(parents=True)
    if kind in ("real", "read_only", "read_only_folder", "symlink"):
        shutil.copyfile(real, path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind in ("dev_null", "dev_zero"):
        return SPECIAL_PATHS[kind == "dev_zero"]
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(noise)
    elif kind == "truncated":
        data = real.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
    elif kind == "corrupted":
        damaged = bytearray(real.read_bytes())
        at = int(len(damaged) * cut)
        damaged[at : at + len(noise)] = noise
        path.write_bytes(bytes(damaged))
    elif kind == "foreign":
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE campaigns (id TEXT, name TEXT)")
            connection.execute("INSERT INTO campaigns VALUES ('c-1', 'not lem')")
        connection.close()
    elif kind == "dangling_symlink":
        path.symlink_to(work / "nowhere.db")
    if kind == "symlink":
        link = path.with_name("link.db")
        link.symlink_to(path)
        path = link
    if kind == "read_only":
        path.chmod(0o444)
    if kind == "read_only_folder":
        path.parent.chmod(0o555)
    return str(path.relative_to(work))


@st.composite
def store_kind(draw: st.DrawFn) -> StoreKind:
    return (
        draw(st.sampled_from(STORE_KINDS)),
        draw(st.floats(0, 1)),
        draw(st.binary(min_size=1, max_size=4096)),
    )


@st.composite
def command_line(draw: st.DrawFn, ids: list[str], store: str, campaign: str) -> list[str]:
    """A command line over the command tree, then mutated: tokens dropped, repeated,
    swapped or inserted (option names, random text)."""
    some_id = st.one_of(st.sampled_from(ids), st.sampled_from([i[:4] for i in ids]), arg_text)
    store_opt = st.sampled_from([["--store", store], [f"--store={store}"], []])
    number = st.one_of(st.integers(-5, 10**12).map(str), arg_text)
    output = st.sampled_from(OUTPUTS)
    command = draw(st.sampled_from([
        "validate", "show", "schema", "campaign", "list", "results-show", "export", "compare",
        "report", "env", "doctor", "docs",
    ]))  # fmt: skip
    opts: list[list[str]] = []
    if command in ("validate", "show", "campaign"):
        head = {"validate": ["config", "validate"], "show": ["config", "show"]}.get(
            command, ["campaign", "--dry-run"]
        )
        argv = [*head, draw(st.one_of(st.just(campaign), arg_text))]
        opts = [["--set", draw(set_item)] for _ in range(draw(st.integers(0, 3)))]
        flag = {"validate": "--limit", "show": "--experiment", "campaign": "--show"}[command]
        opts.append([flag, draw(number)])
        if command == "campaign":
            endpoint = draw(st.sampled_from(["tcp://127.0.0.1:5555", "ipc://x", "TCP://h:1"]))
            opts += [["--resume"], ["--force"], ["--gpus", draw(arg_text)],
                     ["--endpoint", endpoint], ["--max-parallel", draw(number)]]  # fmt: skip
    elif command == "schema":
        argv = ["config", "schema"]
    elif command == "list":
        argv = ["results", "list"]
    elif command == "results-show":
        argv = ["results", "show", draw(some_id)]
    elif command == "export":
        argv = ["results", "export", *draw(st.lists(some_id, max_size=2))]
        opts = [["--format", draw(st.sampled_from(["csv", "json", "parquet", "xml", ""]))],
                ["--level", draw(st.sampled_from(["measurement", "experiment", "x"]))],
                ["-o", draw(output)]]  # fmt: skip
    elif command == "compare":
        argv = ["compare", draw(some_id), draw(some_id)]
        alpha = draw(st.sampled_from(["0.05", "nan", "inf", "2", "-1", "1e-400", "x"]))
        other = draw(st.sampled_from([store, "missing.db", "/dev/null"]))
        opts = [["--alpha", alpha], ["--ignore", draw(st.sampled_from([*FIELDS, "", "x.y"]))],
                ["--json"], ["--store-b", other]]  # fmt: skip
    elif command == "report":
        argv = ["report", draw(some_id), "-o", draw(output)]
    elif command == "env":
        argv = ["env", "list"]
    elif command == "doctor":
        argv = ["doctor", "--variables"]
    else:
        argv = ["docs", *draw(st.lists(st.sampled_from(["methodology", "x"]), max_size=1))]
    if command not in ("validate", "show", "schema", "env", "doctor", "docs"):
        opts.append(draw(store_opt))
    argv = [*draw(st.lists(st.sampled_from(GLOBAL_FLAGS), max_size=2)), *argv]
    for opt in draw(st.permutations(opts)):
        if draw(st.booleans()):
            argv += opt
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "swap", "option", "text"]))
        at = draw(st.integers(0, len(argv)))
        if op == "option":
            argv.insert(at, draw(st.sampled_from(OPTIONS)))
        elif op == "text":
            argv.insert(at, draw(arg_text))
        elif argv and at < len(argv):
            if op == "drop":
                del argv[at]
            elif op == "repeat":
                argv.insert(at, argv[at])
            elif at + 1 < len(argv):
                argv[at], argv[at + 1] = argv[at + 1], argv[at]
    return argv


def made_safe(argv: list[str]) -> list[str] | None:
    """``argv`` with ``--dry-run`` / ``--variables`` put back where a mutation moved them,
    or None where it would run a campaign, sync an environment or write outside the
    sandbox (an absolute or ``..`` path)."""
    for token in argv:
        value = token.split("=", 1)[-1]
        if token.startswith("-o") and not token.startswith("--"):
            value = token[2:]
        if (value.startswith("/") and value not in SPECIAL_PATHS) or ".." in value:
            return None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    if i == len(argv):
        return argv
    command, rest = argv[i], argv[i + 1 :]
    if command in ("run", "resume"):
        return None
    if command == "env":
        words = [t for t in rest if not t.startswith("-")]
        if words and words[0] != "list":
            return None
    fixed = {"campaign": "--dry-run", "doctor": "--variables"}.get(command)
    if fixed is not None and rest[:1] != [fixed]:
        return [*argv[: i + 1], fixed, *rest]
    return argv


def outputs_of(argv: list[str]) -> list[str]:
    """The files or folders a command line names with ``-o``/``--output`` (relative to
    the sandbox root), every way click reads them."""
    found = []
    for i, token in enumerate(argv):
        if token in ("-o", "--output") and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif token.startswith("--output="):
            found.append(token.removeprefix("--output="))
        elif token.startswith("-o") and not token.startswith("--") and len(token) > 2:
            found.append(token[2:])
    return [f"work/{os.path.normpath(p)}" for p in found if p not in ("-", "")]
