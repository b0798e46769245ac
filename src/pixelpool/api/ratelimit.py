"""Per-key request rate limit: a token bucket per principal, in memory.

Each authenticated request takes one token; a bucket holds at most `burst`
tokens and refills at `per_minute / 60` tokens per second. An empty bucket
answers 429 with `Retry-After` (whole seconds until the next token).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, who: str, per_minute: float, burst: int) -> float:
        """Take one token for `who`: 0.0 if allowed, else seconds until one is available."""
        if per_minute <= 0:
            return 0.0
        capacity = max(1, burst or math.ceil(per_minute))
        rate = per_minute / 60.0
        now = self._clock()
        bucket = self._buckets.setdefault(who, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate
