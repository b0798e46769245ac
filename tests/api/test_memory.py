"""Memory is handed back when work drains, and once more after the caches of the last
jobs expired (events and recent results stay in memory for a while after a job ends)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest

from pixelpool.api import memory


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def test_releases_on_drain_and_again_after_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_drain_and_settle(monkeypatch))


def test_new_work_cancels_the_settle_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_work_again(monkeypatch))


async def _drain_and_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "CHECK_S", 0.005)
    released: list[str] = []
    monkeypatch.setattr(memory, "release_memory", lambda trim: released.append("trim"))
    busy = True
    idle_calls: list[int] = []
    task = asyncio.create_task(
        memory.trim_when_idle(lambda: busy, lambda: idle_calls.append(1), settle_s=0.05)
    )
    try:
        await asyncio.sleep(0.02)
        assert idle_calls == []  # never while busy
        busy = False
        await wait_for(lambda: len(idle_calls) == 1)
        await wait_for(lambda: len(idle_calls) == 2)  # the settle pass
        await asyncio.sleep(0.1)
        assert len(idle_calls) == 2 and released == ["trim", "trim"]  # then nothing more
    finally:
        task.cancel()


async def _work_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "CHECK_S", 0.005)
    monkeypatch.setattr(memory, "release_memory", lambda trim: None)
    state = {"busy": True}
    idle_calls: list[int] = []
    task = asyncio.create_task(
        memory.trim_when_idle(lambda: state["busy"], lambda: idle_calls.append(1), 0.2)
    )
    try:
        await asyncio.sleep(0.02)
        state["busy"] = False
        await wait_for(lambda: len(idle_calls) == 1)
        state["busy"] = True  # work again before the settle pass: it is dropped
        await asyncio.sleep(0.3)
        assert len(idle_calls) == 1
    finally:
        task.cancel()


def test_freezing_leaves_a_full_collection_only_what_came_after() -> None:
    """In a process of its own: frozen objects are never collected, so a test process
    (which builds many apps) must not freeze its own."""
    code = (
        "import gc\n"
        "from pixelpool.api.app import create_app\n"
        "from pixelpool.api.memory import freeze_startup_objects\n"
        "from pixelpool.config import Settings\n"
        "app = create_app(Settings())\n"
        "before = len(gc.get_objects())\n"
        "freeze_startup_objects()\n"
        "print(before, len(gc.get_objects()), gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    before, after, frozen = map(int, out.stdout.split())
    assert before > 50_000  # what every full collection walked
    assert after < 1_000 and frozen > 50_000  # now out of its way
