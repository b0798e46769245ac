"""The scheduler: matches queued tasks to free workers and groups them into batches.

Runs on the event loop; every decision is a few dictionary operations, so it never
blocks. Workers report back through callbacks that land on the same loop.

Order of preference for a free worker: fair share between owners (the owner that
has been served least goes first), then a model the worker already holds, then
priority with ageing (a task gains one level per second waiting), then age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pixelpool.config import SchedulerSettings
from pixelpool.engine.handle import WorkerHandle
from pixelpool.engine.messages import (
    Admin,
    AdminDone,
    BatchDone,
    BatchStarted,
    CancelJob,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
)
from pixelpool.engine.slot import Slot
from pixelpool.engine.task import EngineListener, Task
from pixelpool.pipelines.base import WorkItem

log = logging.getLogger(__name__)

AGEING_S_PER_PRIORITY = 1.0
WATCHDOG_S = 1.0
GIB = 1 << 30


class NoDeviceFits(ValueError):
    """No device can run the task at all: refused at submit, never left queued."""


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
        self._served: dict[str | None, float] = {}  # fair-share virtual time per owner
        self._admin: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Deaths per device since its worker last finished a batch: the respawn backoff
        # grows with these, not with every restart in the server's life.
        self._crashes: dict[str, int] = {}

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

    def check(self, task: Task) -> None:
        """Raise NoDeviceFits, saying why, if no device could ever run the task."""
        able = [s for s in self.slots if s.can_run(task)]
        if not able:
            raise NoDeviceFits(f"no device is configured to run {task.family}/{task.op}")
        if not any(s.fits(task, 1) for s in able):
            biggest = max(s.budget for s in able)
            raise NoDeviceFits(
                f"the job needs about {task.bytes_for(1) / GIB:.1f} GiB of device memory; "
                f"the largest device budget is {biggest / GIB:.1f} GiB (use a smaller size)"
            )

    def submit(self, task: Task) -> None:
        """Queue a task (after `check`); it runs when a fitting worker is free."""
        self.check(task)
        if not self._owner_waiting(task.owner):
            # A newly active owner goes just ahead of the least-served waiting owner
            # (whatever it ran before): whoever floods the queue delays it by at most
            # the batches already running.
            waiting = [self._served.get(t.owner, 0.0) for t in self._pending.values()]
            if waiting:
                self._served[task.owner] = min(waiting) - 1
        self._pending[task.job_id] = task
        self._wake.set()

    def _owner_waiting(self, owner: str | None) -> bool:
        return any(t.owner == owner for t in self._pending.values())

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

    async def admin(
        self, device_id: str | None, op: str, family: str, model: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Run a cache command (load/unload/pin/unpin) on one device or all; return reports."""
        slots = [s for s in self.slots if device_id in (None, s.handle.device.id)]
        if not slots:
            raise KeyError(device_id)
        futures = []
        for slot in slots:
            request_id = uuid.uuid4().hex
            future = asyncio.get_running_loop().create_future()
            try:
                slot.handle.send(Admin(request_id, op, family, model))
            except (OSError, RuntimeError) as exc:  # restarting: say so, do not raise
                future.set_result({"device": slot.handle.device.id, "cache": slot.cache,
                                   "error": f"worker unavailable: {exc}"})  # fmt: skip
            else:
                self._admin[request_id] = future
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def queue_depth(self) -> int:
        return len(self._pending)

    def snapshot(self) -> list[dict[str, Any]]:
        return [slot.snapshot() for slot in self.slots]

    # --- dispatch --------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            delay = self._dispatch()
            self._watchdog()
            self._wake.clear()
            timeout = WATCHDOG_S if delay is None else min(delay, WATCHDOG_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def _rank(self, task: Task, slot: Slot, now: float) -> tuple[float, ...]:
        effective = task.priority - (now - task.submitted) / AGEING_S_PER_PRIORITY
        affinity = 0 if slot.holds(task.model["path"]) else 1
        return (self._served.get(task.owner, 0.0), affinity, effective, task.submitted)

    def _dispatch(self) -> float | None:
        """Start every batch that can start now; return seconds until the next check."""
        now = time.monotonic()
        next_check: float | None = None
        for slot in self.slots:
            if not slot.idle or not self._pending:
                continue
            candidates = [t for t in self._pending.values() if slot.can_run(t) and slot.fits(t, 1)]
            if not candidates:
                continue
            head = min(candidates, key=lambda t: self._rank(t, slot, now))
            batch = self._batch_for(head, candidates, slot)
            wait = self._window_left(batch, now)
            if wait > 0:
                next_check = wait if next_check is None else min(next_check, wait)
                continue
            self._start(slot, batch)
        return next_check

    def _batch_for(self, head: Task, candidates: list[Task], slot: Slot) -> list[Task]:
        limit = min(self.settings.max_batch, head.max_batch or self.settings.max_batch)
        if not self.settings.batching or limit == 1:
            return [head]
        mates = [t for t in candidates if t.group == head.group and t is not head]
        mates.sort(key=lambda t: (self._served.get(t.owner, 0.0), t.priority, t.submitted))
        batch = [head]
        for mate in mates:
            if len(batch) >= min(limit, mate.max_batch or limit) or not slot.fits(
                head, len(batch) + 1
            ):
                break
            batch.append(mate)
        return batch

    def _window_left(self, batch: list[Task], now: float) -> float:
        """Wait up to batch_window_ms after the head arrived for companions to join."""
        if not self.settings.batching or len(batch) >= self.settings.max_batch:
            return 0.0
        window = self.settings.batch_window_ms / 1000
        return max(0.0, batch[0].submitted + window - now)

    def _start(self, slot: Slot, batch: list[Task]) -> None:
        for task in batch:
            del self._pending[task.job_id]
            self._served[task.owner] = self._served.get(task.owner, 0.0) + 1
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

    def _watchdog(self) -> None:
        """Kill a worker whose heartbeats stopped: it is hung; the exit path respawns it."""
        now = time.monotonic()
        for slot in self.slots:
            silent = now - slot.last_seen
            if slot.ready and silent > self.settings.heartbeat_timeout_s and slot.handle.is_alive():
                log.error("worker %s silent for %.0fs: killing it", slot.handle.device.id, silent)
                slot.ready = False
                slot.handle.kill()

    # --- worker callbacks (on the loop) -----------------------------------------------

    def _slot(self, handle: WorkerHandle) -> Slot:
        return next(s for s in self.slots if s.handle is handle)

    def _on_message(self, handle: WorkerHandle, message: object) -> None:
        slot = self._slot(handle)
        slot.last_seen = time.monotonic()
        match message:
            case Ready(budget_bytes=budget, cache=cache):
                slot.ready, slot.budget_bytes, slot.cache = True, budget, cache
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
            case ItemFailed(job_id=job_id, error=error, kind="oom"):
                self._out_of_memory(slot, job_id, error)
            case ItemFailed(job_id=job_id, error=error, kind=kind):
                self.listener.job_failed(job_id, error, kind)
            case BatchDone(batch_id=batch_id, cache=cache):
                if batch_id == slot.batch_id:
                    slot.batch_id, slot.batch = None, []
                self._crashes.pop(handle.device.id, None)  # healthy again: no backoff
                slot.cache = cache
                self._wake.set()
            case AdminDone(request_id=request_id, error=error, cache=cache):
                slot.cache = cache
                future = self._admin.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result({"device": handle.device.id, "error": error, "cache": cache})

    def _out_of_memory(self, slot: Slot, job_id: str, error: str) -> None:
        """Retry with a smaller batch, then on another device, before failing the job."""
        task = next((t for t in slot.batch if t.job_id == job_id), None)
        if task is None:
            self.listener.job_failed(job_id, error, "error")
            return
        device = slot.handle.device.id
        if len(slot.batch) > 1:
            task.max_batch = max(1, len(slot.batch) // 2)
        else:
            task.excluded.add(device)
            if not any(s.can_run(task) and s.fits(task, 1) for s in self.slots):
                self.listener.job_failed(
                    job_id, f"out of memory on every device that can run it ({error})", "error"
                )
                return
        self.listener.job_requeued(job_id, f"out of memory on {device}; retrying")
        self._pending[job_id] = task

    def _on_exit(self, handle: WorkerHandle, reason: str) -> None:
        if self._stopping:
            return
        slot = self._slot(handle)
        log.error("worker %s died: %s", handle.device.id, reason)
        lost, slot.batch, slot.batch_id, slot.ready = slot.batch, [], None, False
        slot.cache = {}
        for future in self._admin.values():
            if not future.done():
                future.set_result({"device": handle.device.id, "error": reason, "cache": {}})
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
            crashes = self._crashes[handle.device.id] = self._crashes.get(handle.device.id, 0) + 1
            slot.handle = self._respawn(slot)
            delay = min(30.0, 0.25 * 2 ** min(crashes, 7))
            asyncio.get_running_loop().create_task(self._restart(slot, delay))

    async def _restart(self, slot: Slot, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._stopping:
            slot.last_seen = time.monotonic()
            await slot.handle.start(self._on_message, self._on_exit)
