"""In which order a campaign's (experiment position, cycle) pairs run; lazily, O(1) memory.

- ``grouped``: every cycle of an experiment back to back, experiments in plan order (plan
  order keeps experiments that share a load key together, so a model loads once).
- ``interleaved``: cycle-major: cycle 0 of every experiment, then cycle 1, ...
- ``shuffled``: cycle-major too, but each cycle visits the experiments in its own random
  order, a permutation seeded by (``seed``, cycle). An experiment's cycles still run in
  cycle order; models are reloaded whenever the load key changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, get_args

Order = Literal["grouped", "interleaved", "shuffled"]
ORDERS: tuple[str, ...] = get_args(Order)

_MASK_64 = (1 << 64) - 1
_ROUNDS = 4


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK_64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return value ^ (value >> 31)


class LazyPermutation:
    """A seeded bijection of ``range(count)`` computed per index (a balanced Feistel
    network over the next even power of two, cycle-walking back into range)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        bits = max(2, (max(count, 2) - 1).bit_length())
        bits += bits % 2
        self._half_bits = bits // 2
        self._half_mask = (1 << self._half_bits) - 1
        self._keys = [_mix64(seed * 1_000_003 + r) for r in range(_ROUNDS)]

    def _encrypt(self, value: int) -> int:
        left, right = value >> self._half_bits, value & self._half_mask
        for key in self._keys:
            left, right = right, left ^ (_mix64(right ^ key) & self._half_mask)
        return (left << self._half_bits) | right

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(index)
        value = self._encrypt(index)
        while value >= self.count:  # at most ~4 steps on average: the domain is < 4×count
            value = self._encrypt(value)
        return value


def schedule(count: int, cycles: int, order: Order, seed: int = 0) -> Iterator[tuple[int, int]]:
    """(experiment position, cycle) pairs of ``count`` experiments × ``cycles`` cycles."""
    if order == "grouped":
        for position in range(count):
            for cycle in range(cycles):
                yield position, cycle
    elif order == "interleaved":
        for cycle in range(cycles):
            for position in range(count):
                yield position, cycle
    elif order == "shuffled":
        for cycle in range(cycles):
            permutation = LazyPermutation(count, _mix64(seed) ^ cycle)
            for index in range(count):
                yield permutation[index], cycle
    else:
        raise ValueError(f"unknown order {order!r} (known: {', '.join(ORDERS)})")
