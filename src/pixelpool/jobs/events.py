"""In-process event bus: job events fan out to WebSocket/SSE subscribers and waiters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[tuple[asyncio.Queue[Event], Callable[[Event], bool]]] = set()
        self._queue_size = queue_size

    def publish(self, event: Event) -> None:
        for queue, accepts in list(self._subscribers):
            if accepts(event):
                # A stalled subscriber loses events rather than stalling the server.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)

    def subscribe(self, accepts: Callable[[Event], bool]) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add((queue, accepts))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers = {s for s in self._subscribers if s[0] is not queue}
