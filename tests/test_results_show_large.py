"""``lem results show`` on a large campaign: a summary (swept axes, counts, flags, the best
and worst experiments), ``--where`` and ``--all``; at or below the threshold the full table as
before. Stores are built by ``benchmarks/results_scale.build_store`` from a source store
written here, then varied in SQL (failures, null energy, flags); every expected figure is
worked out from the store itself, not from lem's summary code."""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from benchmarks.results_scale import build_store
from lem.coordinator.cli.main import main
from lem.coordinator.results.summary import RANKED, SUMMARY_ABOVE
from lem.coordinator.results.view import render_campaign_detail
from lem.coordinator.store.results_store import Store
from tests.synthetic_results import add_campaign, config
from tests.test_results_view import text_of

N = 300
FAILED_AT = 20  # its cycle 1 failed
CAPPED = range(10, 20)  # these carry power_capped too
NO_ENERGY = (7, 8)  # no J/token in any cycle
NOISY = 160  # batch 1, 320 output tokens; J/token of its cycle 1 tripled: high_cv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / "source.db"
    with Store(path) as store:
        add_campaign(store, "src", [config(4)], [[0.5, 0.52]])
    return path


def varied_store(folder: Path, source: Path, n: int = N) -> tuple[Path, str, str]:
    """Campaigns A and B of ``n`` experiments; A varied as the module's constants say, its
    model.seed set to the position (an axis of ``n`` values)."""
    path = folder / f"scale-{n}.db"
    a, b = build_store(path, source, n)
    db = sqlite3.connect(path)
    pos = "experiment_id IN (SELECT id FROM experiments WHERE campaign_id = :c AND position {})"
    with db:
        db.execute(
            "UPDATE experiments SET config_json = json_set(config_json, '$.model.seed', position)"
            " WHERE campaign_id = ?",
            (a,),
        )
        db.execute(
            "UPDATE measurements SET energy_per_output_token_j = NULL, energy_j = NULL,"
            " energy_unavailable_reason = 'NVML is not available' WHERE "
            + pos.format(f"IN {NO_ENERGY}"),
            {"c": a},
        )
        db.execute(
            """UPDATE measurements SET flags_json = '["power_capped", "short_window"]' WHERE """
            + pos.format(f"BETWEEN {CAPPED.start} AND {CAPPED.stop - 1}"),
            {"c": a},
        )
        db.execute(
            "UPDATE measurements SET energy_per_output_token_j = 3 * energy_per_output_token_j"
            " WHERE cycle = 1 AND " + pos.format(f"= {NOISY}"),
            {"c": a},
        )
        failed = pos.format(f"= {FAILED_AT}")
        db.execute(f"DELETE FROM measurements WHERE cycle = 1 AND {failed}", {"c": a})
        [(failed_id,)] = db.execute(
            "SELECT id FROM experiments WHERE campaign_id = ? AND position = ?", (a, FAILED_AT)
        ).fetchall()
    db.close()
    with Store(path) as store:  # a failed cycle as the runner stores one
        store.record_failure(failed_id, 1, "worker died (exit 137)", "w-1", 2)
    return path, a, b


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, source: Path) -> tuple[Path, str, str]:
    return varied_store(tmp_path_factory.mktemp("big"), source)


def show(store: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["results", "show", *args, "--store", str(store)])


@dataclass(frozen=True)
class Exp:
    position: int
    config: dict[str, Any]
    ok: int
    failed: int
    j: float | None  # median J/token over ok cycles
    tps: float | None  # median tok/s over ok cycles
    flags: set[str]


def experiments(store: Path, campaign: str) -> list[Exp]:
    """Per experiment, worked out here: position, config, ok/failed cycles, medians over
    ok cycles of J/token and tok/s, flags of ok cycles (high_cv where CV > 5%)."""
    db = sqlite3.connect(store)
    found = []
    for eid, position, config_json in db.execute(
        "SELECT id, position, config_json FROM experiments WHERE campaign_id = ? ORDER BY position",
        (campaign,),
    ):
        rows = db.execute(
            "SELECT status, energy_per_output_token_j, output_tokens_per_s, flags_json"
            " FROM measurements WHERE experiment_id = ?",
            (eid,),
        ).fetchall()
        ok = [r for r in rows if r[0] == "ok"]
        j = [r[1] for r in ok if r[1] is not None]
        flags = {f for r in ok for f in json.loads(r[3] or "[]")}
        if len(j) > 1 and statistics.stdev(j) / statistics.fmean(j) > 0.05:
            flags.add("high_cv")
        found.append(
            Exp(
                position=position,
                config=json.loads(config_json),
                ok=len(ok),
                failed=len(rows) - len(ok),
                j=statistics.median(j) if j else None,
                tps=statistics.median(r[2] for r in ok) if ok else None,
                flags=flags,
            )
        )
    db.close()
    return found


def positions(table_text: str) -> list[int]:
    """The ``#`` column of a rendered experiment table, in order."""
    return [
        int(cells[1])
        for line in table_text.splitlines()
        if len(cells := line.split("│")) > 2 and cells[1].strip().isdigit()
    ]


def section(text: str, start: str, end: str | None = None) -> str:
    after = text[text.index(start) :]
    return after[: after.index(end)] if end else after


# ---- the summary -------------------------------------------------------------------


def test_summary_names_the_swept_axes_with_their_values(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    done = show(store, a)
    assert done.exit_code == 0, done.output
    axes = section(done.output, "Swept axes", "\nCounts")
    lines = axes.strip().splitlines()[1:]
    exps = experiments(store, a)
    expected: dict[str, list[int]] = {}
    for name, path in [("batch_size", ["batch_size"]), ("input_tokens", ["input_tokens"]),
                       ("output_tokens", ["output_tokens"]), ("model.seed", ["model", "seed"]),
                       ("prompts.seed", ["prompts", "seed"])]:  # fmt: skip
        values: set[int] = set()
        for e in exps:
            node: Any = e.config
            for part in path:
                node = node[part]
            values.add(node)
        expected[name] = sorted(values)
    assert len(lines) == len(expected), axes  # nothing else varies (the name is no axis)
    for name, distinct in expected.items():
        [line] = [line for line in lines if line.split()[0] == name]
        shown = line.split(None, 1)[1]
        if len(distinct) <= 12:
            assert shown == ", ".join(str(v) for v in distinct)
        else:
            assert shown == f"{len(distinct)} values, {distinct[0]} to {distinct[-1]}"
    assert "model.seed" in axes and f"{N} values, 0 to {N - 1}" in axes
    assert "  batch_size" in axes and "1, 2, 4, 8, 16, 32, 64, 128" in axes


def test_summary_counts_cycles_energy_and_failures(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    out = show(store, a).output
    exps = experiments(store, a)
    ok = sum(e.ok for e in exps)
    failed = sum(e.failed for e in exps)
    null = 2 * len(NO_ENERGY)
    assert f"Measurements: {ok} ok, {failed} failed" in out  # the header as ever
    assert f"Experiments  {N}: {N - 1} ok, 1 with a failed cycle, 0 with no cycle stored" in out
    assert f"Cycles       {ok} ok, {failed} failed: worker died (exit 137) ({failed})" in out
    assert f"{ok - null} of the {ok} ok cycles have J/token; null in {null}: " in out
    assert f"NVML is not available ({null})" in out


def test_summary_ranks_the_best_and_worst_by_j_per_token(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    out = show(store, a).output
    ranked = [e for e in experiments(store, a) if e.j is not None]
    by_j = sorted(ranked, key=lambda e: (e.j or 0.0, e.position))
    best = [e.position for e in by_j[:RANKED]]
    worst_first = sorted(ranked, key=lambda e: (-(e.j or 0.0), e.position))
    worst = [e.position for e in worst_first[:RANKED]]
    assert NOISY in worst  # its tripled cycle makes it the worst
    title = f"best {RANKED} by J/token (lowest median over ok cycles; {len(NO_ENERGY)} without"
    assert title in out
    assert positions(section(out, f"best {RANKED} by", f"worst {RANKED} by")) == best
    assert positions(section(out, f"worst {RANKED} by", "experiments not listed")) == worst
    not_listed = N - len(set(best) | set(worst))
    assert f"{not_listed} experiments not listed: `--all` lists every one, `--where" in out
    assert "`--where batch_size=1`" in out


def test_summary_counts_experiments_per_flag(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    out = show(store, a).output
    counted = Counter(f for e in experiments(store, a) for f in e.flags)
    assert counted["power_capped"] == len(CAPPED) and counted["high_cv"] == 1
    flags = section(out, "Flags (", f"best {RANKED}").strip().splitlines()[1:]
    assert [line.split()[:2] for line in flags] == [
        [flag, str(n)] for flag, n in sorted(counted.items(), key=lambda i: (-i[1], i[0]))
    ]
    assert "the GPU held its clocks back at its power limit" in out  # the flag's meaning


def test_without_energy_the_ranking_is_by_throughput_and_says_so(
    big: tuple[Path, str, str],
) -> None:
    store, _, b = big
    copy = store.parent / "no-energy.db"
    copy.write_bytes(store.read_bytes())
    with sqlite3.connect(copy) as db:
        db.execute(
            "UPDATE measurements SET energy_per_output_token_j = NULL, energy_j = NULL,"
            " energy_unavailable_reason = 'no GPU'"
        )
    db.close()
    out = show(copy, b).output
    by_tps = sorted(experiments(copy, b), key=lambda e: (-(e.tps or 0.0), e.position))
    assert f"best {RANKED} by tok/s (J/token is null in every experiment) (highest" in out
    got = positions(section(out, f"best {RANKED} by", f"worst {RANKED} by"))
    assert got == [e.position for e in by_tps[:RANKED]]
    assert f"0 of the {2 * N} ok cycles have J/token; null in {2 * N}: no GPU ({2 * N})" in out


# ---- --where and --all -------------------------------------------------------------


def test_where_lists_the_matching_rows(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    exps = experiments(store, a)
    eights = [e.position for e in exps if e.config["batch_size"] == 8]
    assert 0 < len(eights) <= SUMMARY_ABOVE
    done = show(store, a, "--where", "batch_size=8")
    assert done.exit_code == 0, done.output
    assert f"Where batch_size=8: {len(eights)} of {N} experiments" in done.output
    assert positions(done.output) == eights
    # ANDed; a column (status, flag) as well as a config leaf
    both = show(store, a, "--where", "batch_size=8", "--where", "input_tokens=256").output
    assert positions(both) == [
        e.position for e in exps if e.config["batch_size"] == 8 and e.config["input_tokens"] == 256
    ]
    assert positions(show(store, a, "--where", "status=failed").output) == [FAILED_AT]
    assert positions(show(store, a, "--where", "flag=power_capped").output) == list(CAPPED)
    assert positions(show(store, a, "--where", "flag=high_cv").output) == [NOISY]
    none = show(store, a, "--where", "batch_size=3")
    assert none.exit_code == 0 and "Where batch_size=3: 0 of 300 experiments" in none.output
    assert "batch_size: 1, 2, 4, 8, 16, 32, 64, 128" in none.output


def test_where_keeping_many_summarises_them_and_caps_the_rows(
    big: tuple[Path, str, str],
) -> None:
    store, a, _ = big
    exps = experiments(store, a)
    seed0 = [e for e in exps if e.config["prompts"]["seed"] == 0]
    assert len(seed0) > SUMMARY_ABOVE
    out = show(store, a, "--where", "prompts.seed=0").output
    assert f"Where prompts.seed=0: {len(seed0)} of {N} experiments" in out
    assert "prompts.seed" not in section(out, "Swept axes", "\nCounts")  # fixed in the subset
    first = f"the first {SUMMARY_ABOVE} of the {len(seed0)} experiments where prompts.seed=0"
    capped = positions(section(out, first, "experiments not listed"))
    assert capped == [e.position for e in seed0[:SUMMARY_ABOVE]]
    listed = set(capped) | set(positions(section(out, "best ", first)))
    assert f"{len(seed0) - len(listed)} experiments not listed: `--all` lists every matching" in out
    every = show(store, a, "--where", "prompts.seed=0", "--all").output
    assert positions(every) == [e.position for e in seed0]


def test_all_lists_every_experiment(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    done = show(store, a, "--all")
    assert done.exit_code == 0
    assert positions(done.output) == list(range(N))
    assert "Swept axes" not in done.output and "not listed" not in done.output


def test_a_bad_where_is_one_line_naming_the_valid_keys(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    done = show(store, a, "--where", "batch=8")
    assert done.exit_code == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("lem: error: --where: unknown key 'batch'; valid keys: status, flag,")
    for key in ("batch_size", "model.name", "workload.mode", "prompts.seed"):
        assert f" {key}," in line or line.endswith(f" {key}")
    [line] = show(store, a, "--where", "batch_size").stderr.splitlines()
    assert line == "lem: error: --where: expected KEY=VALUE (e.g. batch_size=8), got 'batch_size'"


# ---- small campaigns: as before ------------------------------------------------------


@pytest.mark.parametrize("n", [SUMMARY_ABOVE, SUMMARY_ABOVE + 1])
def test_the_full_table_up_to_the_threshold(tmp_path: Path, source: Path, n: int) -> None:
    store, a, _ = varied_store(tmp_path, source, n)
    with Store.read_only(store) as read:
        table = text_of(*render_campaign_detail(read.campaign_detail(a)))
    out = show(store, a).output
    if n <= SUMMARY_ABOVE:
        assert out == table  # byte for byte what it always was
    else:
        assert "Swept axes" in out and out != table
        assert out.startswith(table[: table.index("Measurements:")])


def test_the_summary_keeps_the_stopped_by_error_line(big: tuple[Path, str, str]) -> None:
    store, a, _ = big
    copy = store.parent / "stopped.db"
    copy.write_bytes(store.read_bytes())
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE campaigns SET status = 'failed', error = 'RuntimeError: boom'")
    db.close()
    out = show(copy, a).output
    header = out[: out.index("Swept axes")]
    assert (
        f"Stopped by an unexpected error: RuntimeError: boom (go on with: lem resume {a})" in header
    )
