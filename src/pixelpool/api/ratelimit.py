"""Per-key request rate limit: a token bucket per principal, in memory.

Each authenticated request takes one token; a bucket holds at most `burst`
tokens and refills at `per_minute / 60` tokens per second. An empty bucket
answers 429 with `Retry-After` (whole seconds until the next token). A bucket
that has refilled is the same as no bucket, so full ones are dropped from time
to time: memory follows the callers active in the last minute or so, not every
key or JWT subject ever seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

PRUNE_EVERY_S = 60.0


@dataclass
class _Bucket:
    tokens: float
    updated: float
    capacity: float
    rate: float  # tokens per second

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.capacity


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._pruned = clock()

    def take(self, who: str, per_minute: float, burst: int) -> float:
        """Take one token for `who`: 0.0 if allowed, else seconds until one is available."""
        if per_minute <= 0:
            return 0.0
        capacity = max(1, burst or math.ceil(per_minute))
        rate = per_minute / 60.0
        now = self._clock()
        if now - self._pruned >= PRUNE_EVERY_S:
            self._prune(now)
        bucket = self._buckets.setdefault(who, _Bucket(capacity, now, capacity, rate))
        bucket.capacity, bucket.rate = capacity, rate  # the key's limit may have changed
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate

    def _prune(self, now: float) -> None:
        self._pruned = now
        for who in [w for w, b in self._buckets.items() if b.full(now)]:
            del self._buckets[who]

    def __len__(self) -> int:
        return len(self._buckets)
