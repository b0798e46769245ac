"""The scheduler: matches queued tasks to free workers and groups them into batches.

Runs on the event loop; every decision is a few dictionary operations, so it never
blocks. Workers report back through callbacks that land on the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pixelpool.config import SchedulerSettings
from pixelpool.engine.handle import WorkerHandle
from pixelpool.engine.messages import (
    BatchDone,
    BatchStarted,
    CancelJob,
    Heartbeat,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
)
from pixelpool.engine.task import EngineListener, Task
from pixelpool.pipelines.base import WorkItem

log = logging.getLogger(__name__)

AGEING_S_PER_PRIORITY = 1.0  # a task gains one priority level per second waiting


@dataclass
class Slot:
    """The scheduler's view of one worker."""

    handle: WorkerHandle
    capabilities: list[str]
    ready: bool = False
    batch_id: str | None = None
    batch: list[Task] = field(default_factory=list)
    batch_started: float = 0.0
    cache: dict[str, Any] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    restarts: int = 0

    @property
    def idle(self) -> bool:
        return self.ready and self.batch_id is None

    def holds(self, model_path: str) -> bool:
        return any(m["key"] == model_path for m in self.cache.get("models", []))

    def can_run(self, task: Task) -> bool:
        caps = self.capabilities
        return "*" in caps or task.family in caps or task.op in caps


class Scheduler:
    def __init__(
        self,
        slots: list[Slot],
        listener: EngineListener,
        settings: SchedulerSettings,
        respawn: Callable[[Slot], WorkerHandle] | None = None,
    ) -> None:
        self.slots = slots
        self.listener = listener
        self.settings = settings
        self._respawn = respawn
        self._pending: dict[str, Task] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._order = itertools.count()

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        for slot in self.slots:
            await slot.handle.start(self._on_message, self._on_exit)
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        await asyncio.gather(*(s.handle.stop() for s in self.slots), return_exceptions=True)

    @property
    def ready(self) -> bool:
        return any(s.ready for s in self.slots)

    # --- requests from the jobs layer --------------------------------------------

    def submit(self, task: Task) -> None:
        if not any(slot.can_run(task) for slot in self.slots):
            raise ValueError(f"no device can run {task.family}/{task.op}")
        self._pending[task.job_id] = task
        self._wake.set()

    def cancel(self, job_id: str) -> str:
        """'cancelled' if it was queued, 'cancelling' if running, 'unknown' otherwise."""
        if self._pending.pop(job_id, None) is not None:
            self.listener.job_failed(job_id, "cancelled", "cancelled")
            return "cancelled"
        for slot in self.slots:
            if any(t.job_id == job_id for t in slot.batch):
                slot.handle.send(CancelJob(job_id))
                return "cancelling"
        return "unknown"

    def queue_depth(self) -> int:
        return len(self._pending)

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                **slot.handle.device.to_dict(),
                "ready": slot.ready,
                "busy": slot.batch_id is not None,
                "active_jobs": [t.job_id for t in slot.batch],
                "pid": slot.handle.pid,
                "restarts": slot.restarts,
                "cache": slot.cache,
            }
            for slot in self.slots
        ]

    # --- dispatch --------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            delay = self._dispatch()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _rank(self, task: Task, slot: Slot, now: float) -> tuple[float, ...]:
        waited = now - task.submitted
        effective = task.priority - waited / AGEING_S_PER_PRIORITY
        return (0 if slot.holds(task.model["path"]) else 1, effective, task.submitted)

    def _dispatch(self) -> float | None:
        """Start every batch that can start now; return seconds until the next check."""
        now = time.monotonic()
        next_check: float | None = None
        for slot in self.slots:
            if not slot.idle or not self._pending:
                continue
            candidates = [t for t in self._pending.values() if slot.can_run(t)]
            if not candidates:
                continue
            head = min(candidates, key=lambda t: self._rank(t, slot, now))
            batch = self._batch_for(head, candidates)
            wait = self._window_left(batch, now)
            if wait > 0:
                next_check = wait if next_check is None else min(next_check, wait)
                continue
            self._start(slot, batch)
        return next_check

    def _batch_for(self, head: Task, candidates: list[Task]) -> list[Task]:
        if not self.settings.batching:
            return [head]
        mates = [t for t in candidates if t.group == head.group and t is not head]
        mates.sort(key=lambda t: (t.priority, t.submitted))
        return [head, *mates[: self.settings.max_batch - 1]]

    def _window_left(self, batch: list[Task], now: float) -> float:
        """Wait up to batch_window_ms after the head arrived for companions to join."""
        if not self.settings.batching or len(batch) >= self.settings.max_batch:
            return 0.0
        window = self.settings.batch_window_ms / 1000
        return max(0.0, batch[0].submitted + window - now)

    def _start(self, slot: Slot, batch: list[Task]) -> None:
        for task in batch:
            del self._pending[task.job_id]
        slot.batch_id = uuid.uuid4().hex
        slot.batch = batch
        slot.batch_started = time.monotonic()
        head = batch[0]
        items = [WorkItem(t.job_id, t.op, t.params) for t in batch]
        try:
            slot.handle.send(RunBatch(slot.batch_id, head.family, head.model, items))
        except (OSError, RuntimeError) as exc:
            log.warning("cannot reach worker %s: %s", slot.handle.device.id, exc)
            return  # the exit callback re-queues the batch
        for task in batch:
            self.listener.job_started(task.job_id, slot.handle.device.id, len(batch))

    # --- worker callbacks (on the loop) -----------------------------------------------

    def _slot(self, handle: WorkerHandle) -> Slot:
        return next(s for s in self.slots if s.handle is handle)

    def _on_message(self, handle: WorkerHandle, message: object) -> None:
        slot = self._slot(handle)
        slot.last_seen = time.monotonic()
        match message:
            case Ready():
                slot.ready = True
                log.info("worker %s ready (pid %s)", handle.device.id, handle.pid)
                self._wake.set()
            case BatchStarted(model_load_s=load_s):
                slot.batch_started = time.monotonic()
                if load_s > 0.05:
                    log.info("worker %s loaded model in %.2fs", handle.device.id, load_s)
            case Progress(job_ids=job_ids, step=step, total=total, stage=stage, previews=pv):
                for i, job_id in enumerate(job_ids):
                    preview = pv[i] if pv and i < len(pv) else None
                    self.listener.job_progress(job_id, step, total, stage, preview)
            case ItemResult(job_id=job_id, result=result):
                run_s = time.monotonic() - slot.batch_started
                self.listener.job_finished(job_id, result, handle.device.id, run_s)
            case ItemFailed(job_id=job_id, error=error, kind=kind):
                self.listener.job_failed(job_id, error, kind)
            case BatchDone(batch_id=batch_id, cache=cache):
                if batch_id == slot.batch_id:
                    slot.batch_id, slot.batch = None, []
                slot.cache = cache
                self._wake.set()
            case Heartbeat():
                pass

    def _on_exit(self, handle: WorkerHandle, reason: str) -> None:
        if self._stopping:
            return
        slot = self._slot(handle)
        log.error("worker %s died: %s", handle.device.id, reason)
        lost, slot.batch, slot.batch_id, slot.ready = slot.batch, [], None, False
        slot.cache = {}
        for task in lost:
            task.attempts += 1
            if task.attempts > self.settings.max_retries:
                self.listener.job_failed(
                    task.job_id, f"worker died {task.attempts} times running this job", "error"
                )
            else:
                self.listener.job_requeued(task.job_id, reason)
                self._pending[task.job_id] = task
        if self._respawn is not None:
            slot.restarts += 1
            slot.handle = self._respawn(slot)
            asyncio.get_running_loop().create_task(
                slot.handle.start(self._on_message, self._on_exit)
            )
