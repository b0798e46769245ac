"""How late the HTTP process's event loop runs what is due: the sign of blocking work.

Every request, WebSocket and job event of the server goes through one event loop, so
anything that blocks it (a synchronous call that waits on a process, a large encode
not moved to a thread) delays them all at once, and nothing else shows it. A timer
that should fire every `INTERVAL_S` fires late by exactly the time the loop spent on
such work; that lateness goes to `pixelpool_event_loop_lag_seconds`, and a lag of a
second or more is logged with the time it happened (at most once a minute).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
LOG_AT_S = 1.0
LOG_EVERY_S = 60.0


async def watch_loop_lag(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Run until cancelled, passing `observe` each timer's lateness in seconds."""
    loop = asyncio.get_running_loop()
    logged_at = float("-inf")
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        now = loop.time()
        lag = max(0.0, now - due)
        observe(lag)
        if lag >= LOG_AT_S and now - logged_at >= LOG_EVERY_S:
            logged_at = now
            log.warning("the event loop was blocked for %.1f s (requests waited)", lag)
