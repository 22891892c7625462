"""Warmup until batch durations converge, bounded; or a fixed number of batches."""

from __future__ import annotations

from lem.protocol.config import WarmupConfig
from lem.workers.workload.warmup import warm_up


class Batches:
    """Batch durations (s) on a fake clock: a warming-up sequence, then steady."""

    def __init__(self, durations_s: list[float]) -> None:
        self.durations_s = durations_s
        self.now_s = 0.0
        self.ran = 0

    def clock(self) -> float:
        return self.now_s

    def run(self, i: int) -> None:
        self.now_s += self.durations_s[min(i, len(self.durations_s) - 1)]
        self.ran += 1


def test_fixed_warmup_runs_exactly_that_many() -> None:
    b = Batches([1.0])
    outcome = warm_up(b.run, 3, WarmupConfig(), b.clock)
    assert (outcome.batches, outcome.converged, b.ran) == (3, None, 3)


def test_stops_once_the_last_window_is_steady() -> None:
    b = Batches([4.0, 3.0, 2.5, 2.2, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    outcome = warm_up(b.run, 1, WarmupConfig(until_cv=0.01, window=4), b.clock)
    assert outcome.converged is True and outcome.final_cv == 0.0
    # four 2.0 s batches end at batch 8 (CV 0), but the four before them averaged 2.925 s;
    # at batch 12 the four before are 2.0 s too: no drift left
    assert outcome.batches == 12


def test_a_slow_climb_with_a_small_cv_is_not_convergence() -> None:
    """Batches 0.5% faster each time: five in a row have a CV of ~0.8% (passes a 2% CV
    test), but the mean moves ~2.5% from one window of five to the next."""
    climbing = Batches([1.0 * 0.995**i for i in range(100)] + [0.995**100] * 20)
    config = WarmupConfig(until_cv=0.02, window=5, max_batches=200)
    out = warm_up(climbing.run, 1, config, climbing.clock)
    assert out.converged is True and out.final_cv is not None and out.final_cv < 0.02
    # converged only once the climb has stopped (batch 100) and a window has settled
    assert out.batches > 100


def test_noise_without_drift_converges_after_two_windows() -> None:
    steady = Batches([1.0, 1.01, 0.99, 1.0, 1.005] * 10)
    out = warm_up(steady.run, 1, WarmupConfig(until_cv=0.02, window=5), steady.clock)
    assert out.converged is True and out.batches == 10


def test_gives_up_at_max_batches_or_time_and_says_so() -> None:
    noisy = Batches([1.0, 2.0] * 50)
    out = warm_up(noisy.run, 1, WarmupConfig(until_cv=0.01, window=3, max_batches=7), noisy.clock)
    assert out.converged is False and out.batches == 7 and out.final_cv is not None
    slow = Batches([10.0, 20.0] * 50)
    out = warm_up(slow.run, 1, WarmupConfig(until_cv=0.01, window=3, max_s=35.0), slow.clock)
    assert out.converged is False and out.batches == 3  # 10 + 20 + 10 s ≥ 35 s
