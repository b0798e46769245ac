"""In-process event bus with a per-job log, so a reconnecting client misses nothing.

Every event gets an id that only grows (microseconds at start-up, then +1), also
across restarts. Each job's events are kept until a while after it finishes;
subscribers replay the log after the last id they saw, then follow live.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
TERMINAL = frozenset({"completed", "failed", "cancelled"})


class EventBus:
    def __init__(
        self, per_job: int = 2000, retain_s: float = 900.0, queue_size: int = 2000
    ) -> None:
        self._ids = itertools.count(time.time_ns() // 1000)
        self._subscribers: set[tuple[asyncio.Queue[Event], Callable[[Event], bool]]] = set()
        self._logs: dict[str, deque[Event]] = {}
        self._finished: dict[str, float] = {}
        self._per_job = per_job
        self._retain_s = retain_s
        self._queue_size = queue_size

    def publish(self, event: Event) -> Event:
        event = {**event, "id": next(self._ids)}
        job_id = event.get("job_id")
        if job_id is not None:
            self._logs.setdefault(job_id, deque(maxlen=self._per_job)).append(event)
            if event.get("type") in TERMINAL:
                self._finished[job_id] = time.monotonic()
                self._prune()
        for queue, accepts in list(self._subscribers):
            if accepts(event):
                # A stalled subscriber loses live events (it can replay them) rather
                # than stalling the server.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
        return event

    def history(self, job_id: str, after: int | None = None) -> list[Event]:
        events = list(self._logs.get(job_id, ()))
        return events if after is None else [e for e in events if e["id"] > after]

    def subscribe(self, accepts: Callable[[Event], bool]) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add((queue, accepts))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers = {s for s in self._subscribers if s[0] is not queue}

    def _prune(self) -> None:
        cutoff = time.monotonic() - self._retain_s
        for job_id, finished in list(self._finished.items()):
            if finished < cutoff:
                del self._finished[job_id]
                self._logs.pop(job_id, None)
