"""Progress from a worker, coalesced: at most one message per interval per batch.

Each message costs the HTTP process a pipe read, an event per job (stored, fanned out
to WebSockets) and CPU time taken from the worker's own threads on a busy machine.
Fast steps (small images, turbo models, big GPUs) can make dozens per second, more
than any progress bar shows. So a step is sent when it carries previews (never
dropped), when it ends a stage (the total is reached: 100 % is always seen), when
the stage changes, or when `interval_s` has passed since the last one sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

INTERVAL_S = 0.1

SendFn = Callable[[int, int, str, "list[Any] | None"], None]


class CoalescedProgress:
    """A worker's progress callback that forwards only the steps worth a message."""

    def __init__(
        self,
        send: SendFn,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send, self._interval, self._clock = send, interval_s, clock
        self._last_sent: float | None = None
        self._stage: str | None = None

    def __call__(
        self, step: int, total: int, stage: str, previews: list[Any] | None = None
    ) -> None:
        now = self._clock()
        due = (
            previews is not None
            or step >= total
            or stage != self._stage
            or self._last_sent is None
            or now - self._last_sent >= self._interval
        )
        if due:
            self._send(step, total, stage, previews)
            self._last_sent, self._stage = now, stage
