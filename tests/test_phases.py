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
