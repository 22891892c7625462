"""What the loop clock adds to one decoding step on the host: the time (ns) of one test of
the loop's condition through ``LoopClock``'s wrapper, minus the time of the bare test.

The loop clock does no device work, so this host time on the generating thread is all it
costs; divide by a decoding step's duration for the relative cost (an 11 ms step at batch
32 on the H100 here: docs/measurements.md, section 5b).

    python benchmarks/loop_clock_cost.py --calls 1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from lem.workers.engines.pytorch.token_clock import LoopClock


class Loop:
    """Stands in for a transformers model: the same condition method, doing what
    ``GenerationMixin._has_unfinished_sequences`` does without ``synced_gpus``."""

    def _has_unfinished_sequences(
        self, this_peer_finished: bool, synced_gpus: bool, device: object = None
    ) -> bool:
        if synced_gpus:
            raise NotImplementedError
        return not this_peer_finished


def per_call_ns(loop: Loop, calls: int) -> float:
    """Mean ns per condition test over ``calls`` tests."""
    test = loop._has_unfinished_sequences
    start_s = time.perf_counter()
    for _ in range(calls):
        test(False, False, device=None)
    return (time.perf_counter() - start_s) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loop = Loop()
    bare_ns, clocked_ns = [], []
    for _ in range(args.repeats):
        bare_ns.append(per_call_ns(loop, args.calls))
        with LoopClock.attached(loop):
            clocked_ns.append(per_call_ns(loop, args.calls))
    added_ns = statistics.median(clocked_ns) - statistics.median(bare_ns)
    print(json.dumps({
        "calls": args.calls, "repeats": args.repeats,
        "bare_ns_median": round(statistics.median(bare_ns), 1),
        "clocked_ns_median": round(statistics.median(clocked_ns), 1),
        "added_ns_per_step": round(added_ns, 1),
        "share_of_an_11_ms_step": added_ns / 11e6,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
