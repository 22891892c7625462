"""``lem compare``: matching experiments of two campaigns and Welch's verdict per metric,
on stores with a known difference, with noise only, and identical."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lem.coordinator.results.compare import compare_campaigns, compare_metric
from lem.coordinator.store.results_store import Store, StoreError
from lem.protocol.results import EngineLock
from tests.synthetic_results import add_campaign, config

CYCLES = 5


def noisy(mean: float, seed: int, relative_sd: float = 0.01) -> list[float]:
    """``CYCLES`` values around ``mean`` with 1% Gaussian noise (fixed seed: the same
    values every run)."""
    rng = random.Random(seed)
    return [mean * (1 + rng.gauss(0, relative_sd)) for _ in range(CYCLES)]


def two_campaigns(tmp_path: Path, b_factor: float, b_seed: int) -> tuple[Path, str, str]:
    """A: batch 1 and batch 8 at 0.50 and 0.20 J/token; B: the same experiments (other
    names, other order) scaled by ``b_factor``, plus a batch 32 experiment A lacks."""
    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1), config(8)], [noisy(0.5, 1), noisy(0.2, 2)])
        b, _ = add_campaign(
            store,
            "b",
            [config(8, "eight"), config(32), config(1, "one")],
            [noisy(0.2 * b_factor, b_seed), noisy(0.1, 9), noisy(0.5 * b_factor, b_seed + 1)],
        )
    return db, a, b


def verdicts(db: Path, a: str, b: str) -> dict[tuple[int, str], str]:
    result = compare_campaigns(db, a, b)
    return {(p.a.position, m.metric): m.verdict for p in result.pairs for m in p.metrics}


def test_a_known_ten_percent_drop_in_j_per_token_is_found(tmp_path: Path) -> None:
    db, a, b = two_campaigns(tmp_path, b_factor=0.9, b_seed=3)
    result = compare_campaigns(db, a, b)
    assert [(p.a.position, p.b.position, p.b.name) for p in result.pairs] == [
        (0, 2, "one"),
        (1, 0, "eight"),
    ]
    assert [(r.position, r.name) for r in result.only_b] == [(1, "b32")] and result.only_a == []
    for pair in result.pairs:
        energy = next(m for m in pair.metrics if m.metric == "energy_per_output_token_j")
        assert energy.n_a == energy.n_b == CYCLES
        assert energy.significant is True and energy.p is not None and energy.p < 1e-4
        assert energy.verdict.startswith("significant (p=")
        assert energy.delta_pct == pytest.approx(-10.0, abs=2.0)
        assert energy.delta is not None and energy.delta < 0
        assert energy.mean_a is not None and energy.mean_b is not None
        assert energy.delta == pytest.approx(energy.mean_b - energy.mean_a)
        rate = next(m for m in pair.metrics if m.metric == "output_tokens_per_s")
        assert rate.verdict == "no significant difference (p=1)"  # tok/s did not change


def test_noise_alone_is_no_significant_difference(tmp_path: Path) -> None:
    db, a, b = two_campaigns(tmp_path, b_factor=1.0, b_seed=3)  # same means, other noise
    found = verdicts(db, a, b)
    assert found[(0, "energy_per_output_token_j")].startswith("no significant difference (p=")
    assert found[(1, "energy_per_output_token_j")].startswith("no significant difference (p=")


def test_identical_campaigns_show_no_difference(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    values = [noisy(0.5, 1), noisy(0.2, 2)]
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1), config(8)], values)
        b, _ = add_campaign(store, "b", [config(1), config(8)], values)
    result = compare_campaigns(db, a, b)
    assert len(result.pairs) == 2 and not result.only_a and not result.only_b
    for pair in result.pairs:
        assert {m.metric for m in pair.metrics} == {
            "energy_per_output_token_j",
            "output_tokens_per_s",
            "ttft_p50_ms",
        }
        for m in pair.metrics:
            assert m.p == 1.0 and m.significant is False and m.delta == 0.0
            assert m.verdict == "no significant difference (p=1)"


def test_too_few_cycles_are_not_tested() -> None:
    one = compare_metric("energy_per_output_token_j", [0.5], [0.4, 0.41], 0.05)
    assert one.p is None and one.significant is None
    assert one.verdict == "too few cycles (A: 1, B: 2; need 2 a side)"
    assert one.delta == pytest.approx(-0.095)


def test_ignore_lets_deliberately_different_configs_match(tmp_path: Path) -> None:
    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1)], [[0.5, 0.5]])
        b, _ = add_campaign(store, "b", [config(2)], [[0.5, 0.5]])
    plain = compare_campaigns(db, a, b)
    assert plain.pairs == [] and len(plain.only_a) == len(plain.only_b) == 1
    ignoring = compare_campaigns(db, a, b, ignore=["batch_size"])
    assert len(ignoring.pairs) == 1 and ignoring.ignored_fields == ["batch_size", "name"]
    with pytest.raises(ValueError, match="no config field 'batch'"):
        compare_campaigns(db, a, b, ignore=["batch"])
    with pytest.raises(ValueError, match="alpha"):
        compare_campaigns(db, a, b, alpha=1.5)
    with pytest.raises(StoreError, match="c-nope"):
        compare_campaigns(db, a, "c-nope")


def lem_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_a_table_and_json(tmp_path: Path) -> None:
    db, a, b = two_campaigns(tmp_path, b_factor=0.9, b_seed=3)
    shown = lem_cli("compare", a, b, "--store", str(db))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "│ J/token" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[9] == "-9.93" and cells[11] == "significant (p=6.7e-06)"
    assert "Only in B (no matching experiment): #1 b32" in shown.stdout
    as_json = json.loads(lem_cli("compare", a, b, "--store", str(db), "--json").stdout)
    assert as_json["campaign_a"] == a and as_json["alpha"] == 0.05
    metrics = as_json["pairs"][0]["metrics"]
    assert metrics[0]["metric"] == "energy_per_output_token_j" and metrics[0]["significant"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["c-nope", "{b}"], "no campaign with id or id prefix 'c-nope'"),
        (["c-", "{b}"], "is ambiguous"),
        (["{a}", "{b}", "--alpha", "x"], "--alpha: expected a number"),
        (["{a}", "{b}", "--alpha", "0"], "alpha must be between 0 and 1"),
        (["{a}", "{b}", "--ignore", "nope"], "no config field 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    db, a, b = two_campaigns(tmp_path, b_factor=1.0, b_seed=3)
    done = lem_cli("compare", *[x.format(a=a, b=b) for x in args], "--store", str(db))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and done.stdout == ""


def test_campaign_b_from_another_store(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        a, _ = add_campaign(store, "a", [config(1)], [noisy(0.5, 1)])
    with Store(tmp_path / "b.db") as store:
        b, _ = add_campaign(store, "b", [config(1)], [noisy(0.4, 2)])
    result = compare_campaigns(tmp_path / "a.db", a, b, store_b=tmp_path / "b.db")
    assert (result.campaign_a, result.campaign_b) == (a, b)
    [pair] = result.pairs
    energy = pair.metrics[0]
    assert energy.delta_pct == pytest.approx(-20.0, abs=2.0) and energy.significant
    with pytest.raises(StoreError, match="no campaign"):
        compare_campaigns(tmp_path / "a.db", a, b)  # B is not in A's store


def test_campaigns_under_different_engine_locks_are_flagged(tmp_path: Path) -> None:
    """Same configs, measured in environments made from different locks (or one that did
    not hold its lock exactly): compare says so per pair, in the table and in JSON."""
    cpu = EngineLock(name="pytorch-cpu", sha256="a" * 64, made_from=True, matches=True)
    newer = EngineLock(name="pytorch-cpu", sha256="b" * 64, made_from=True, matches=True)
    drifted = EngineLock(name="pytorch-cpu", sha256="a" * 64, matches=False, difference_count=1)
    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1)], [noisy(0.5, 1)], engine_lock=cpu)
        same, _ = add_campaign(store, "same", [config(1)], [noisy(0.5, 2)], engine_lock=cpu)
        b, _ = add_campaign(store, "b", [config(1)], [noisy(0.5, 3)], engine_lock=newer)
        c, _ = add_campaign(store, "c", [config(1)], [noisy(0.5, 4)], engine_lock=drifted)
        old, _ = add_campaign(store, "old", [config(1)], [noisy(0.5, 5)])
    assert compare_campaigns(db, a, same).pairs[0].lock_mismatch is None
    [pair] = compare_campaigns(db, a, b).pairs
    assert pair.lock_mismatch == (
        f"different engine locks: A pytorch-cpu@{'a' * 12}; B pytorch-cpu@{'b' * 12}"
    )
    [pair] = compare_campaigns(db, a, c).pairs
    assert pair.lock_mismatch is not None and f"B pytorch-cpu@{'a' * 12}+differs" in (
        pair.lock_mismatch
    )
    [pair] = compare_campaigns(db, old, a).pairs  # results from before lem recorded locks
    assert pair.lock_mismatch is not None and "A unrecorded;" in pair.lock_mismatch
    shown = lem_cli("compare", a, b, "--store", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "Engine environments differ for A#0 / B#0: different engine locks: A" in shown.stdout
    assert (
        "Engine environments differ" not in lem_cli("compare", a, same, "--store", str(db)).stdout
    )
    as_json = json.loads(lem_cli("compare", a, b, "--store", str(db), "--json").stdout)
    assert as_json["pairs"][0]["lock_mismatch"].startswith("different engine locks")


def test_the_command_shows_names_as_they_are_not_read_as_markup(tmp_path: Path) -> None:
    name = "fp32[batch_size=1,input_tokens=16]"
    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1, name)], [noisy(0.5, 1)])
        b, _ = add_campaign(store, "b", [config(1, name), config(2, "[b]only[/b]")],
                            [noisy(0.5, 2), noisy(0.5, 3)])  # fmt: skip
    shown = lem_cli("compare", a, b, "--store", str(db))
    assert shown.returncode == 0, shown.stderr
    assert name in shown.stdout and "Only in B (no matching experiment): #1 [b]only[/b]" in (
        shown.stdout
    )


def test_null_energy_is_said_not_compared_with_its_stored_reason(tmp_path: Path) -> None:
    """CPU runs have no energy (nothing meters them): compare leaves J/token out of the
    table, and says so — for which pairs, null on which side, and the reason stored."""
    from tests.test_store import NO_NVML

    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, "a", [config(1), config(2)], [[None, None], [None, None]])
        b, _ = add_campaign(store, "b", [config(1), config(2)], [[None, None], [0.4, 0.5]])
    result = compare_campaigns(db, a, b)
    both, one_side = result.pairs
    assert "energy_per_output_token_j" not in {m.metric for m in both.metrics + one_side.metrics}
    [energy] = [n for n in both.not_compared if n.metric == "energy_per_output_token_j"]
    assert (energy.null_a, energy.null_b, energy.reason_a, energy.reason_b) == (
        True, True, NO_NVML, NO_NVML
    )  # fmt: skip
    [energy] = [n for n in one_side.not_compared if n.metric == "energy_per_output_token_j"]
    assert (energy.null_a, energy.null_b, energy.reason_a, energy.reason_b) == (
        True, False, NO_NVML, None
    )  # fmt: skip

    shown = lem_cli("compare", a, b, "--store", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "│ J/token" not in shown.stdout
    lines = shown.stdout.splitlines()
    both_null = "J/token not compared for A#0 / B#0: null in every ok cycle of A and B (both: "
    assert both_null + f"{NO_NVML})" in lines
    assert f"J/token not compared for A#1 / B#1: null in every ok cycle of A (A: {NO_NVML})" in (
        lines
    )
    as_json = json.loads(lem_cli("compare", a, b, "--store", str(db), "--json").stdout)
    assert {
        "metric": "energy_per_output_token_j",
        "null_a": True,
        "null_b": False,
        "reason_a": NO_NVML,
        "reason_b": None,
    } in as_json["pairs"][1]["not_compared"]
