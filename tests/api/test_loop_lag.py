"""The event loop's lag: a blocked loop shows as a late timer, and a long block is logged."""

import asyncio
import logging
import time

import pytest

from pixelpool.api import loop_lag


def test_a_blocked_loop_is_measured_and_a_long_block_logged_once_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(loop_lag, "LOG_AT_S", 0.2)  # the block below stays short

    async def go() -> list[float]:
        seen: list[float] = []
        watcher = asyncio.create_task(loop_lag.watch_loop_lag(seen.append, interval_s=0.01))
        await asyncio.sleep(0.05)
        for _ in range(2):
            time.sleep(0.3)  # work that blocks the loop, as a synchronous call would
            await asyncio.sleep(0.05)
        watcher.cancel()
        return seen

    with caplog.at_level(logging.WARNING, logger=loop_lag.__name__):
        seen = asyncio.run(go())
    # The timer due during each block fired when it ended: at least 0.3 s less one
    # interval late; the others on time or nearly.
    assert sum(lag >= 0.29 for lag in seen) >= 2
    assert len(seen) > 4 and all(lag >= 0 for lag in seen)
    blocked = [r for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert len(blocked) == 1  # the second block fell within the minute
