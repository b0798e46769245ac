"""In-process event bus with a per-job log, so a reconnecting client misses nothing.

Every event gets an id that only grows (microseconds at start-up, then +1), also
across restarts: the first id is above both the clock and the largest id the
store has seen, so a clock that went backwards cannot reuse ids. Each job's events
are kept in memory until `retain_s` after it finishes or, with an `EventLog`, only
`memory_s` (the log writes them to the job store, so replay still works after the
job left memory or the server restarted, and memory stays flat under load).
Subscribers replay the log after the last id they saw, then follow live. Publishing
never waits for the store (see `eventlog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pixelpool.jobs.eventlog import EventLog

Event = dict[str, Any]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
MEMORY_S = 60.0  # a finished job's events stay in memory this long when the store has them


def clock_id() -> int:
    return time.time_ns() // 1000


class EventBus:
    def __init__(
        self,
        log: EventLog | None = None,
        first_id: int | None = None,
        per_job: int = 2000,
        retain_s: float = 900.0,
        queue_size: int = 2000,
        memory_s: float = MEMORY_S,
    ) -> None:
        self._ids = itertools.count(max(first_id or 0, clock_id()))
        self._log = log
        self._subscribers: set[tuple[asyncio.Queue[Event], Callable[[Event], bool]]] = set()
        self._large: set[asyncio.Queue[Event]] = set()  # also take `broadcast` events
        self._logs: dict[str, deque[Event]] = {}
        self._truncated: set[str] = set()  # jobs whose memory log lost its oldest events
        self._finished: dict[str, float] = {}
        self._per_job = per_job
        self._retain_s = retain_s if log is None else min(retain_s, memory_s)
        self._queue_size = queue_size

    @classmethod
    async def persistent(cls, log: EventLog, **kwargs: Any) -> EventBus:
        """A bus that writes its job events to `log`, its ids above every stored one."""
        bus = cls(log, first_id=await log.high_water() + 1, **kwargs)
        log.start()
        return bus

    def publish(self, event: Event) -> Event:
        event = {**event, "id": next(self._ids)}
        job_id = event.get("job_id")
        if job_id is not None:
            self._remember(job_id, event)
            if self._log is not None:
                self._log.append(event)
            if event.get("type") in TERMINAL:
                self._finished[job_id] = time.monotonic()
                self.prune()
        for queue, accepts in list(self._subscribers):
            if accepts(event):
                # A stalled subscriber loses live events (it can replay them) rather
                # than stalling the server.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
        return event

    def broadcast(self, event: Event) -> Event:
        """A live-only event (a job's caches: megabytes): to the subscribers that asked for
        such events, never logged nor kept for replay."""
        event = {**event, "id": next(self._ids)}
        for queue, accepts in list(self._subscribers):
            if queue in self._large and accepts(event):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
        return event

    def _remember(self, job_id: str, event: Event) -> None:
        log = self._logs.setdefault(job_id, deque(maxlen=self._per_job))
        if event.get("type") == "preview":
            # Only the latest preview is worth replaying (the store keeps only that one
            # too); every step's image kept until the job leaves memory adds up fast.
            kept = [e for e in log if e.get("type") != "preview"]
            if len(kept) < len(log):
                log = self._logs[job_id] = deque(kept, maxlen=self._per_job)
        if len(log) == self._per_job:
            self._truncated.add(job_id)
        log.append(event)

    async def history(self, job_id: str, after: int | None = None) -> list[Event]:
        """The job's events after id `after` (all when None), oldest first.

        From memory when it holds every such event; else from the store (after a
        restart, or once the job left memory), joined with what memory has."""
        memory = list(self._logs.get(job_id, ()))
        newer = memory if after is None else [e for e in memory if e["id"] > after]
        complete = job_id not in self._truncated or (
            after is not None and bool(memory) and after + 1 >= memory[0]["id"]
        )
        if self._log is None or (memory and complete):
            return newer
        stored = await self._log.history(job_id, after)
        last = stored[-1]["id"] if stored else -1
        return stored + [e for e in newer if e["id"] > last]

    async def restore(self, job_id: str) -> None:
        """Load a job's stored events into memory (a job that runs again after a restart),
        so replays of it need no store reads and see its events from before the restart."""
        if self._log is None or job_id in self._logs:
            return
        stored = await self._log.history(job_id)
        last = stored[-1]["id"] if stored else -1
        # Whatever it published meanwhile goes after, each event once.
        events = stored + [e for e in self._logs.get(job_id, ()) if e["id"] > last]
        if len(events) > self._per_job:
            self._truncated.add(job_id)
        self._logs[job_id] = deque(events, maxlen=self._per_job)

    def subscribe(
        self, accepts: Callable[[Event], bool], large: bool = False
    ) -> asyncio.Queue[Event]:
        """Live events `accepts` takes; with `large`, `broadcast` ones too."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add((queue, accepts))
        if large:
            self._large.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers = {s for s in self._subscribers if s[0] is not queue}
        self._large.discard(queue)

    async def purge(self) -> int:
        """Apply the store's retention (the maintenance sweep calls this)."""
        self.prune()
        return 0 if self._log is None else await self._log.purge()

    async def close(self) -> None:
        """Write every event still buffered (at shutdown, before the store closes)."""
        if self._log is not None:
            await self._log.close()

    def prune(self) -> None:
        """Drop from memory the events of jobs finished long enough ago."""
        cutoff = time.monotonic() - self._retain_s
        for job_id, finished in list(self._finished.items()):
            if finished < cutoff:
                del self._finished[job_id]
                self._logs.pop(job_id, None)
                self._truncated.discard(job_id)
