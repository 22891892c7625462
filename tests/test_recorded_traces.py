"""lem's counter code against NVML replayed from a real H100 recording: no GPU needed.

Real: ``tests/data/h100_idle.jsonl`` and ``h100_load.jsonl``, rows recorded on an H100 80GB
HBM3 (driver 580.159.04) and cut by ``tests/data/convert_recorded_trace.py``; derived:
``h100_load_no_counter.jsonl``. Expected values are computed from the rows themselves
(``tests/recorded.py``), not by the code under test.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
from collections.abc import Callable

import pytest

from lem.protocol.devices.counter_period import detect_update_periods
from lem.protocol.devices.nvml import EnergyCounters
from lem.workers.metering.window_policy import judge_window
from tests.data import convert_recorded_trace as convert
from tests.recorded import (
    DATA,
    IDLE,
    LOAD,
    NO_COUNTER,
    PERIOD_S,
    UUID,
    OnReplay,
    Recorded,
    counter_window,
)

# The fixtures themselves.


def test_the_fixtures_are_the_converters_output_on_the_committed_recording() -> None:
    lines = convert.read_recording()
    sha256 = hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()
    assert convert.RECORDING.stat().st_size < 20_000  # 200 KB recorded, gzipped
    texts = convert.fixtures(lines)
    assert set(texts) == {IDLE, LOAD, NO_COUNTER}
    for name, text in texts.items():
        committed = (DATA / name).read_text()
        assert committed == text, f"rerun tests/data/convert_recorded_trace.py for {name}"
        assert len(committed.encode()) <= 60_000
        head = json.loads(committed.splitlines()[0])
        assert head["synthetic"] is False and head["source"]["sha256"] == sha256
        assert head["recorded"].startswith("2026-11-27 on an NVIDIA H100 80GB HBM3 (driver 580")
        assert ("derived" in head) == (name == NO_COUNTER) and head["filled_forward"] == []


def test_the_real_cuts_are_unchanged_contiguous_rows_of_the_recording() -> None:
    recording = convert.read_recording()
    for name, pids in ((IDLE, set()), (LOAD, {convert.LOAD_PID})):
        lines = (DATA / name).read_text().splitlines()
        first, last = json.loads(lines[0])["source"]["lines"]
        assert lines[1:] == recording[first - 1 : last]  # byte for byte, none left out
        trace = Recorded.load(name)
        steps_s = [b - a for a, b in itertools.pairwise(trace.times_s)]
        assert len(trace.rows) > 400 and min(steps_s) > 0 and max(steps_s) < 0.03
        assert all(field in trace.rows[0] for field in convert.SLOW_FIELDS)  # none filled in
        slow = [r for r in trace.rows if "processes" in r]
        assert len(slow) >= 16 and {p["pid"] for r in slow for p in r["processes"]} == pids
        assert len(trace.updates_s()) >= 18
    derived = Recorded.load(NO_COUNTER)
    load = Recorded.load(LOAD)
    assert derived.rows == [{k: v for k, v in r.items() if k != "energy_mj"} for r in load.rows]
    assert derived.header["devices"][0]["energy_counter_supported"] is False


# The counter: its update period, windows at its edges, the quantisation bound.


@pytest.mark.parametrize("name", [IDLE, LOAD])
def test_the_detected_update_period_of_the_real_counter_is_100_ms(
    replay: Callable[..., OnReplay], name: str
) -> None:
    on = replay(name, tick_s=0.002)  # two clock reads a counter read: one every 4 ms, as live
    counters = EnergyCounters([UUID])
    try:
        found = detect_update_periods(counters.read_mj, duration_s=1.0, clock=on.clock)[UUID]
    finally:
        counters.close()
    recorded_s = statistics.median(b - a for a, b in itertools.pairwise(on.trace.updates_s()))
    assert found.reason is None and found.changes_seen >= 9
    assert found.period_s == pytest.approx(PERIOD_S, abs=0.005)  # seen: 0.1000 on both
    assert found.period_s == pytest.approx(recorded_s, abs=0.004)  # one read: 0.1003 / 0.0996


def test_an_edge_either_side_of_a_counter_update_moves_the_figure_by_that_update(
    replay: Callable[..., OnReplay],
) -> None:
    on = replay(LOAD)
    end_s = on.trace.rows[-1]["t_s"]
    counters = EnergyCounters([UUID])
    try:
        for update_s in on.trace.updates_s():
            after = counter_window(on, counters, update_s, end_s).energy_j
            before = counter_window(on, counters, update_s - 1e-6, end_s).energy_j
            step_j = (on.trace.counter_mj(update_s) - on.trace.counter_mj(update_s - 1e-6)) / 1e3
            assert before is not None and after is not None
            assert before - after == pytest.approx(step_j, abs=1e-9)
            assert 60 < step_j < 80  # ~0.1 s at ~690 W: seen 64.4-78.5 J
            power_w = counters.read_power_w(UUID)  # read at end_s: the recorded last reading
            assert power_w == on.trace.row_at(end_s)["power_mw"] / 1e3
            assert power_w is not None and 687 < power_w < 697
    finally:
        counters.close()


def test_window_energy_is_the_counter_difference_and_its_bound_covers_the_true_error(
    replay: Callable[..., OnReplay],
) -> None:
    """Windows of 0.25-1.5 s starting every 7 ms through the steady load. The truth is the
    recorded power's integral (steady here; the counter and it agree within 1%, below)."""
    on = replay(LOAD)
    first_s, last_s = on.trace.times_s[0], on.trace.times_s[-1]
    used = []  # |error| / bound of every window
    counters = EnergyCounters([UUID])
    try:
        for length_s in (0.25, 0.5, 1.0, 1.5):
            for i in range(int((last_s - first_s - length_s) / 0.007) + 1):
                begin_s = first_s + 0.007 * i
                end_s = begin_s + length_s
                energy = counter_window(on, counters, begin_s, end_s)
                counted_mj = on.trace.counter_mj(end_s) - on.trace.counter_mj(begin_s)
                assert energy.energy_j is not None and energy.energy_j == counted_mj / 1e3
                verdict = judge_window(energy.energy_j, length_s, PERIOD_S)
                assert verdict.bound_j is not None and "short_window" in verdict.flags
                error_j = abs(energy.energy_j - on.trace.power_j(begin_s, end_s))
                used.append(error_j / verdict.bound_j)
    finally:
        counters.close()
    assert len(used) > 500
    assert max(used) <= 1.0  # the bound covers every window's true error
    assert max(used) > 0.4  # and is not loose by an order of magnitude: seen 0.64


def test_a_window_shorter_than_the_period_reads_nothing_or_a_whole_update(
    replay: Callable[..., OnReplay],
) -> None:
    """0.05 s windows (half a period) at 2 ms steps: the counter gives 0 J or one update
    (~70 J) where ~35 J were drawn. lem flags both ``short_window``; with the sampled power
    beside it, a 0 J reading still gets a bound that covers what was drawn."""
    on = replay(LOAD)
    first_s = on.trace.times_s[0]
    zero = whole = 0
    counters = EnergyCounters([UUID])
    try:
        for i in range(500):
            begin_s = first_s + 0.002 * i
            energy_j = counter_window(on, counters, begin_s, begin_s + 0.05).energy_j
            true_j = on.trace.power_j(begin_s, begin_s + 0.05)
            verdict = judge_window(energy_j, 0.05, PERIOD_S)
            sampled_w = on.trace.power_j(begin_s, begin_s + 0.05) / 0.05  # the sampler's view
            sampled = judge_window(energy_j, 0.05, PERIOD_S, sampled_power_w=sampled_w)
            assert 33 < true_j < 36 and energy_j is not None
            if energy_j == 0:
                zero += 1
                assert verdict.flags == ["energy_not_positive", "short_window"]
                assert verdict.bound_j == 0  # the counter alone knows no power
                assert sampled.bound_j is not None and abs(energy_j - true_j) <= sampled.bound_j
            else:
                whole += 1
                assert 60 < energy_j < 80 and verdict.flags == ["short_window"]
                assert verdict.bound_j is not None and abs(energy_j - true_j) <= verdict.bound_j
    finally:
        counters.close()
    assert zero > 200 and whole > 200  # about half each: the window is half a period
