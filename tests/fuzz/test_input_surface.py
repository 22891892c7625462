"""Property-based fuzz test of lem's whole input surface (issue 15): campaign files,
``_extends`` chains, ``--set`` values, command lines over the command tree, and store
paths.

The property (``harness.check``), for every input: exit 0, or exit 2 with exactly one
stderr line ``lem: error: …``; never a traceback; never a hang (a watchdog interrupts an
example after ``EXAMPLE_TIMEOUT_S``); bounded memory (the process's address space is
capped at its size plus ``MEMORY_HEADROOM_BYTES``, a subprocess's at 2 GiB); nothing a
terminal would act on in what is printed; nothing written but the named outputs (the
example's folder is snapshotted — paths, modes, sizes, mtimes, content hashes — before
and after, so reading commands leave a store byte-identical and make no -wal/-journal).
Three things are not lem's to avoid and pass: with ``-v``/``--log-json`` the debug log
(a failure's traceback included) comes before the one line; exported rows and ``--json``
on stdout are data, kept exact; matplotlib writes its config and font cache in ``HOME``.

The CLI runs in-process (click's ``CliRunner``, colour codes kept as a terminal gets them,
``sys.argv`` set as the real entry has it); ``test_real_processes`` runs
``python -m lem.coordinator`` itself, for the entry's signal handling and exit path.
``make test`` runs this file with the rest (``pytest -q`` over ``tests/``).

Budget: each test has a fixed ``max_examples`` (the whole file takes well under a minute
on two cores); ``LEM_FUZZ_EXAMPLES=N`` multiplies them for a longer hunt. No example
database is written (``database=None``).

Reproducing a failure: every run uses one seed, ``LEM_FUZZ_SEED`` when set, else a random
one; it is printed in pytest's header and at the end of the run (``lem fuzz seed:
LEM_FUZZ_SEED=N …``; the end alone under ``-q``, as ``make test`` runs) and in every
failure message. ``LEM_FUZZ_SEED=N pytest tests/fuzz`` draws the same examples again (the
tests are decorated with ``@seed(FUZZ_SEED)``, so ``--hypothesis-seed`` is not needed;
``LEM_FUZZ_EXAMPLES`` must be the failed run's too); hypothesis prints the shrunk example.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from lem.coordinator.store.results_store import Store
from tests.fuzz import FUZZ_SEED
from tests.fuzz.commands import (
    StoreKind,
    command_line,
    made_safe,
    make_store,
    outputs_of,
    store_kind,
)
from tests.fuzz.harness import (
    EXAMPLE_TIMEOUT_S,
    Sandbox,
    as_argv,
    bounded_memory,
    check,
    invoke,
    invoke_subprocess,
    sandbox,
)
from tests.fuzz.strategies import BASE, campaign_text, set_item
from tests.synthetic_results import add_campaign, config

settings.register_profile(
    "lem-fuzz",
    deadline=EXAMPLE_TIMEOUT_S * 1000,  # hangs are the watchdog's; this only reports
    derandomize=False,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SCALE = max(1, int(os.environ.get("LEM_FUZZ_EXAMPLES", "1")))
pytestmark = pytest.mark.slow  # about 30 s in all; `make test` runs it


def budget(examples: int) -> settings:
    return settings(settings.get_profile("lem-fuzz"), max_examples=examples * SCALE)


RealStore = tuple[Path, list[str]]  # its path, its campaigns' ids
# A campaign and an experiment whose names a terminal would act on, and rich markup
HOSTILE_NAME = "b \x1b[31mred\x1b[0m [/bold] <b>&\u202e\x85"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with bounded_memory():
        yield tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def real_store(base: Path) -> RealStore:
    """A real store: a clean campaign, and one with hostile names and a failed cycle."""
    path = base / "real.db"
    with Store(path) as store:
        a, _ = add_campaign(store, "a", [config(1), config(8)], [[0.5, 0.4], [0.2, 0.3]])
        b, _ = add_campaign(
            store, HOSTILE_NAME, [config(1, name=HOSTILE_NAME), config(8)],
            [[0.5, 0.6], [0.2, None]], failed_cycles=[(1, 1)],
        )  # fmt: skip
    return path, [a, b]


def run_checked(box: Sandbox, argv: list[str], outputs: Sequence[str] = ()) -> None:
    before = box.snapshot()
    outcome = invoke(argv, box)
    check(outcome, before, box.snapshot(), outputs)


def campaign_command(path: str, which: int, sets: list[str]) -> list[str]:
    argv = [["config", "validate", path], ["config", "show", path], ["campaign", "--dry-run", path]]
    return [*argv[which], *(a for item in sets for a in ("--set", item))]


@seed(FUZZ_SEED)
@budget(150)
@given(
    text=st.one_of(campaign_text, st.binary(max_size=300)),
    which=st.integers(0, 2),
    sets=st.lists(set_item, max_size=2),
)
def test_campaign_files(base: Path, text: str | bytes, which: int, sets: list[str]) -> None:
    with sandbox(base) as box:
        path = box.work / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
        run_checked(box, campaign_command("c.yaml", which, sets))


EXTENDS_TARGETS = [
    "a.yaml", "sub/b.yaml", "../a.yaml", "main.yaml", "sub/../a.yaml", "../outside.yaml",
    "../../outside.yaml", "nope.yaml", "folder", "fifo", "loop", "out-link.yaml", "dev",
    "/dev/zero", "/etc/hostname", "", ".", "a.yaml/", "ABSOLUTE", "a\\0b", "x" * 5000,
    "sub", "in-link.yaml", "\x1b[31m.yaml",
]  # fmt: skip


@st.composite
def extends_value(draw: st.DrawFn, absolute: str) -> str:
    """An ``_extends`` value: a list of targets (inside, outside, missing, special, a cycle)
    or something that is no file name at all."""
    one = st.sampled_from(EXTENDS_TARGETS).map(lambda t: absolute if t == "ABSOLUTE" else t)
    value = draw(st.one_of(one.map(lambda t: [t]), st.lists(one, max_size=4), st.just(None)))
    if value is None:
        return draw(st.sampled_from(["7", "{a: 1}", "[1, 2]", "null", "[[a.yaml]]"]))
    return "[" + ", ".join(f'"{t}"' for t in value) + "]"


@seed(FUZZ_SEED)
@budget(100)
@given(data=st.data(), which=st.integers(0, 2))
def test_extends_chains(base: Path, data: st.DataObject, which: int) -> None:
    with sandbox(base) as box:
        camp = box.work / "camp"
        (camp / "sub").mkdir(parents=True)
        (camp / "folder").mkdir()
        os.mkfifo(camp / "fifo")
        (camp / "loop").symlink_to(camp / "loop")
        (camp / "dev").symlink_to("/dev/zero")
        (box.work / "outside.yaml").write_text(BASE)
        (camp / "out-link.yaml").symlink_to(box.work / "outside.yaml")
        (camp / "in-link.yaml").symlink_to(camp / "a.yaml")
        for name in ("main.yaml", "a.yaml", "sub/b.yaml"):
            body = data.draw(st.sampled_from([BASE, "experiment: {batch_size: 2}\n", ""]))
            if data.draw(st.booleans()):
                body += data.draw(campaign_text)
            extends = data.draw(extends_value(str(camp / "a.yaml")))
            (camp / name).write_text(f"_extends: {extends}\n{body}", errors="replace")
        main = "camp/main.yaml" if data.draw(st.booleans()) else "camp/loop"
        run_checked(box, campaign_command(main, which, []))


@seed(FUZZ_SEED)
@budget(100)
@given(sets=st.lists(set_item, min_size=1, max_size=4), which=st.integers(0, 2))
def test_set_values(base: Path, sets: list[str], which: int) -> None:
    with sandbox(base) as box:
        (box.work / "c.yaml").write_text(BASE + "grid: {batch_size: [1, 2]}\n")
        run_checked(box, campaign_command("c.yaml", which, sets))


def prepared(box: Sandbox, real: Path, kind: StoreKind) -> str:
    (box.work / "c.yaml").write_text(BASE)
    return make_store(box, real, kind)


@seed(FUZZ_SEED)
@budget(150)
@given(data=st.data(), kind=store_kind())
def test_command_lines(
    base: Path, real_store: RealStore, data: st.DataObject, kind: StoreKind
) -> None:
    real, ids = real_store
    with sandbox(base) as box:
        store = prepared(box, real, kind)
        argv = made_safe(as_argv(data.draw(command_line(ids, store, "c.yaml"))))
        if argv is None:
            return  # would run a campaign or write outside the sandbox
        run_checked(box, argv, outputs_of(argv))


@seed(FUZZ_SEED)
@budget(100)
@given(kind=store_kind(), data=st.data())
def test_store_paths(
    base: Path, real_store: RealStore, kind: StoreKind, data: st.DataObject
) -> None:
    real, ids = real_store
    with sandbox(base) as box:
        store = prepared(box, real, kind)
        a, b = data.draw(st.permutations(ids)) if data.draw(st.booleans()) else (ids[0], "c-x")
        argv, outputs = data.draw(st.sampled_from([
            (["results", "list"], []),
            (["results", "show", a], []),
            (["results", "export", a, "-o", "out.json"], ["work/out.json"]),
            (["results", "export", "--level", "experiment"], []),
            (["compare", a, b, "--json"], []),
            (["compare", a, b, "--store-b", "stores/other.db"], []),
            (["report", a, "-o", "rep"], ["work/rep"]),
        ]))  # fmt: skip
        if "stores/other.db" in argv:
            shutil.copyfile(real, box.work / "stores" / "other.db")
        run_checked(box, [*argv, "--store", store], outputs)


@seed(FUZZ_SEED)
@budget(8)
@given(kind=store_kind(), data=st.data())
def test_real_processes(
    base: Path, real_store: RealStore, kind: StoreKind, data: st.DataObject
) -> None:
    """The installed entry point as a process of its own (its signal handling and exit
    path), on stores and command lines as above, with a hard timeout and memory limit."""
    real, ids = real_store
    with sandbox(base) as box:
        store = prepared(box, real, kind)
        argv = made_safe(as_argv(data.draw(command_line(ids, store, "c.yaml"))))
        if argv is None:
            return
        before = box.snapshot()
        outcome = invoke_subprocess(argv, box)
        check(outcome, before, box.snapshot(), outputs_of(argv))
