"""The per-key token bucket, on a fake clock."""

from pixelpool.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("a", 60, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 60, 3) == 1.0  # one token per second
    assert limiter.take("b", 60, 3) == 0.0  # buckets are per key
    clock.now += 0.5
    assert limiter.take("a", 60, 3) == 0.5
    clock.now += 0.5
    assert limiter.take("a", 60, 3) == 0.0
    clock.now += 3600
    assert [limiter.take("a", 60, 3) for _ in range(4)][-1] > 0  # capped at the burst


def test_zero_rate_is_no_limit_and_default_burst_is_a_minute() -> None:
    limiter = RateLimiter(Clock())
    assert all(limiter.take("a", 0, 0) == 0.0 for _ in range(1000))
    assert all(limiter.take("b", 5, 0) == 0.0 for _ in range(5))
    assert limiter.take("b", 5, 0) == 12.0


def test_refilled_buckets_are_dropped_so_memory_follows_active_callers() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for n in range(500):
        limiter.take(f"subject-{n}", 60, 5)
    assert len(limiter) == 500
    clock.now += 60  # every bucket has refilled: pruning drops them all
    assert limiter.take("busy", 30, 1) == 0.0
    assert len(limiter) == 1
    assert limiter.take("busy", 30, 1) == 2.0  # a live bucket keeps limiting
