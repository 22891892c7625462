"""Token timestamps of one ``model.generate`` call, taken on the generating thread.

``LoopClock`` (lem's clock) stamps ``time.perf_counter()`` each time the decoding loop
tests its condition. transformers' ``GenerationMixin._sample`` (greedy and sampling alike)
runs the prefill, then loops ``while self._has_unfinished_sequences(...)``: the condition
is tested once on entry (the prefill queued, maybe not finished), then once after each
decoding step, right after that step's stop check ``StopCheck.__call__`` returned
``bool(unfinished_sequences.max() == 0)``. Reading that flag on the host waits for the
device to finish everything queued before it, the step's new tokens included; between it
and the next test run only Python (``del outputs``, the loop's test). So a call that
generated N columns tests the condition N + 1 times, and tests 1…N are the times the
device had finished steps 1…N, late only by the host-side Python between the read and the
stamp (lem-tiny on CPU: 13 µs median after the streamer's ``put``, which precedes the
read). The clock adds no device work and keeps no tensor: while attached, the model
instance's ``_has_unfinished_sequences`` is a wrapper that appends a float and calls the
class's method; the instance attribute is removed when the call ends, normally or not.

Checked in the source of transformers 5.17.0 and 5.24.0 (``generation/utils.py``):
``GENERATION_MODES_MAPPING`` sends GREEDY_SEARCH and SAMPLE to ``_sample``, called
unbound on the model (``getattr(type(self), ...)``, so ``self`` is the instance and sees
the wrapper); ``_sample`` calls ``_prefill`` then loops on ``_has_unfinished_sequences``
(5.17 l. 3002/3024, 5.24 l. 3208/3230), ``StopCheck.__call__`` reads the flag (5.17
l. 383, 5.24 l. 396), and ``_has_unfinished_sequences`` itself touches the device only
under ``synced_gpus`` (DeepSpeed ZeRO-3 / FSDP, which lem never sets). The other stop
check, ``DeferredStopCheck``, reads the flag one step late; its ``is_supported`` is false
on every device but Apple's ``mps``, where lem does not run. ``step_times_s`` refuses a
call whose count differs, so a transformers version whose loop differs fails loudly.

``StepClock`` is the former clock, kept for comparison (benchmarks/token_timing_overhead.py,
``--clocks streamer``): a transformers streamer, handed the prompt once and then each
step's tokens. transformers' ``StopCheck`` copies the tokens to the host (``.cpu()``, a
device-to-host copy and a wait) for the streamer before its own flag read: one more copy
and one more wait per step, measured at 1.5–3% of an H100's decode throughput (not
resolved from noise; docs/measurements.md).

This module imports transformers at its top (for ``StepClock``): import it lazily
(``passes`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from transformers.generation.streamers import BaseStreamer

ClockName = Literal["loop", "streamer"]

LOOP_TEST = "_has_unfinished_sequences"  # GenerationMixin's loop condition, wrapped


class TokenClock(Protocol):
    """What ``passes`` reads of a call's clock."""

    def step_times_s(self, generated_columns: int) -> list[float]: ...


class LoopClock:
    """``times_s``: perf_counter seconds at each test of the decoding loop's condition;
    the first is the loop's entry, the others follow each decoding step."""

    def __init__(self) -> None:
        self.times_s: list[float] = []
        self.detached = False

    @classmethod
    @contextmanager
    def attached(cls, model: Any) -> Iterator[LoopClock]:
        """A clock stamping ``model``'s loop tests until the block ends; then the model's
        own ``_has_unfinished_sequences`` is back (also when the block raised)."""
        own = vars(model)
        if not callable(getattr(type(model), LOOP_TEST, None)):
            raise ValueError(
                f"token timing: {type(model).__name__} has no {LOOP_TEST}; this transformers "
                "version loops differently from the versions lem was checked on"
            )
        previous = own.get(LOOP_TEST)  # None unless something else wrapped it already
        loop_test: Callable[..., bool] = getattr(model, LOOP_TEST)
        clock = cls()
        times_s = clock.times_s
        now_s = time.perf_counter

        def stamped(*args: Any, **kwargs: Any) -> bool:
            times_s.append(now_s())
            return loop_test(*args, **kwargs)

        own[LOOP_TEST] = stamped
        try:
            yield clock
        finally:
            if previous is None:
                del own[LOOP_TEST]
            else:
                own[LOOP_TEST] = previous
            clock.detached = True

    def step_times_s(self, generated_columns: int) -> list[float]:
        """The time of each decoding step (s), checked against the call's
        ``generated_columns`` (new tokens per row). Raises ValueError when the loop tested
        its condition another number of times than ``generated_columns`` + 1."""
        steps = self.times_s[1:]
        if not self.detached or len(steps) != generated_columns:
            raise ValueError(
                f"token timing: the decoding loop tested its condition {len(self.times_s)} "
                f"time(s) for {generated_columns} generated column(s) (expected "
                f"{generated_columns + 1}; call ended: {self.detached}); this transformers "
                "version loops differently from the versions lem was checked on"
            )
        return steps


class StepClock(BaseStreamer):
    """``times_s``: perf_counter seconds at each ``put``; the first is the prompt's."""

    def __init__(self) -> None:
        self.times_s: list[float] = []
        self.ended = False

    def put(self, value: Any) -> None:
        self.times_s.append(time.perf_counter())

    def end(self) -> None:
        self.ended = True

    def step_times_s(self, generated_columns: int) -> list[float]:
        """The time of each decoding step (s), checked against the call's ``generated_columns``
        (new tokens per row). Raises ValueError when transformers streamed another count."""
        steps = self.times_s[1:]
        if not self.ended or len(steps) != generated_columns:
            raise ValueError(
                f"token timing: transformers streamed {len(steps)} decoding step(s) for "
                f"{generated_columns} generated column(s) (ended: {self.ended}); this "
                "transformers version streams differently from the versions lem was checked on"
            )
        return steps
