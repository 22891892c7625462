"""Splitting a window's energy into prefill and decode."""

from __future__ import annotations

import pytest

from lem.workers.workload.phases import split_phases


def test_decode_is_the_full_window_minus_scaled_prefill() -> None:
    # full: 4 passes of 8 prompts × 128 tokens = 4096 tokens, 3200 J;
    # prefill-only: 10 passes, 500 J → 200 J for 4 passes.
    split = split_phases(3200.0, 4, 500.0, 10, input_tokens=4096, output_tokens=4096, prompts=32)
    assert split.reason is None
    assert split.decode_energy_j == pytest.approx(3000.0)
    assert split.decode_energy_per_output_token_j == pytest.approx(3000.0 / (4096 - 32))
    assert split.prefill_energy_per_input_token_j == pytest.approx(200.0 / 4096)


def test_missing_prefill_window_or_energy_or_noise_say_why() -> None:
    assert "measure_prefill" in (split_phases(1.0, 1, None, 0, 1, 1, 1).reason or "")
    assert split_phases(None, 1, 5.0, 1, 1, 1, 1).reason == "a window has no energy"
    noisy = split_phases(100.0, 1, 150.0, 1, 10, 10, 1)
    assert noisy.decode_energy_j is None and "too noisy" in (noisy.reason or "")


def test_a_prefill_window_shorter_than_two_counter_updates_is_null_never_zero() -> None:
    """The sleep engine's prefill window on a replayed H100 counter (0.1 s updates) lasts
    milliseconds: the counter difference is 0 J though the GPU drew power. Null, with why."""
    from lem.workers.workload.phases import trusted_prefill_energy

    energy_j, why = trusted_prefill_energy(0.0, 0.004, 0.1)
    assert energy_j is None and "shorter than two updates of the energy counter" in (why or "")
    energy_j, why = trusted_prefill_energy(0.0, 3.0, None)  # period unknown, counter still
    assert energy_j is None and "did not move" in (why or "")
    assert trusted_prefill_energy(0.0, 3.0, 0.1)[0] is None
    assert trusted_prefill_energy(210.0, 3.0, 0.1) == (210.0, None)
    assert trusted_prefill_energy(None, 3.0, 0.1) == (None, None)
