"""Token timestamps of one ``model.generate`` call, taken on the generating thread.

transformers hands a ``streamer`` the prompt ids once (``put``, before the prefill), then
the new tokens of each decoding step (``put``, right after the step's tokens were copied to
the host with ``.cpu()``, which waits for the device), then calls ``end``. ``StepClock``
keeps only ``time.perf_counter()`` at each ``put``: a list append, no tensor is kept.

Checked in transformers 5.17 and 5.24 (``GenerationMixin._sample`` → ``StopCheck``): one
``put`` per decoding step for the whole batch (finished rows get pad tokens and still share
the step), on the dynamic and the static cache path alike. On Apple's ``mps`` device
transformers defers its stop check and streams one step late; lem does not run there.

This module imports transformers at its top: import it lazily (``passes`` does).
"""

from __future__ import annotations

import time
from typing import Any

from transformers.generation.streamers import BaseStreamer


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
