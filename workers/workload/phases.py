"""Prefill and decode energy from a full window and a prefill-only window.

The full window runs ``passes`` passes of ``generate`` with N new tokens per prompt: one
prefill forward (which yields the first token) and N − 1 decode steps. The prefill-only
window runs its own passes with one new token. Per pass, decode energy is the difference:

    decode_energy_j = E_full − E_prefill × passes_full / passes_prefill

and it is divided by the tokens the decode steps produced (output tokens − prompts). Each
window's energy carries its own quantisation bound; the difference inherits both.

A prefill-only window shorter than two updates of the energy counter (or one whose counter
did not move at all) is no measurement: its counter difference can be 0 J while the GPU
drew power. Its energy is then null with the reason (``trusted_prefill_energy``), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseSplit:
    """Prefill and decode energy (J) and per-token figures, or the reason there are none."""

    prefill_energy_j: float | None
    prefill_energy_per_input_token_j: float | None
    decode_energy_j: float | None
    decode_energy_per_output_token_j: float | None
    reason: str | None


def trusted_prefill_energy(
    energy_j: float | None, duration_s: float | None, counter_period_s: float | None
) -> tuple[float | None, str | None]:
    """The prefill-only window's energy (J), or None and why it cannot be trusted."""
    if energy_j is None:
        return None, None
    if duration_s is None or duration_s <= 0:
        return None, "the prefill-only window has no duration"
    if counter_period_s is not None and duration_s < 2 * counter_period_s:
        return None, (
            "the prefill-only window (prefill_duration_s) is shorter than two updates of the"
            " energy counter (energy_counter_period_s): its counter difference means nothing"
        )
    if energy_j <= 0:
        return (
            None,
            f"the energy counter did not move in the {duration_s:.3g} s prefill-only window",
        )
    return energy_j, None


def split_phases(
    full_energy_j: float | None,
    full_passes: int,
    prefill_energy_j: float | None,
    prefill_passes: int,
    input_tokens: int,
    output_tokens: int,
    prompts: int,
) -> PhaseSplit:
    """``input_tokens``, ``output_tokens`` and ``prompts`` are the full window's totals."""
    if prefill_passes == 0:
        return PhaseSplit(None, None, None, None, "no prefill-only window (measure_prefill)")
    if full_energy_j is None or prefill_energy_j is None:
        return PhaseSplit(prefill_energy_j, None, None, None, "a window has no energy")
    prefill_in_full_j = prefill_energy_j * full_passes / prefill_passes
    per_input_j = prefill_in_full_j / input_tokens if input_tokens else None
    decode_j = full_energy_j - prefill_in_full_j
    if decode_j < 0:
        why = "prefill-only energy exceeds the full window's: the windows are too noisy"
        return PhaseSplit(prefill_energy_j, per_input_j, None, None, why)
    decode_tokens = output_tokens - prompts
    per_decode_token_j = decode_j / decode_tokens if decode_tokens > 0 else None
    return PhaseSplit(prefill_energy_j, per_input_j, decode_j, per_decode_token_j, None)
