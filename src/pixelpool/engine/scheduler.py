"""The scheduler: hands queued tasks to free workers, and handles what workers report.

Runs on the event loop; every decision is a few dictionary operations, so it never
blocks. Which tasks run next, how they batch, and what happens after an out-of-memory
error or a lost worker is decided in `policy` (pure code); this module does the I/O:
messages, futures, the heartbeat watchdog, respawning workers. Workers report back
through callbacks that land on the same loop. `clock` is injectable so tests can drive
the watchdog and restarts without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pixelpool.config import SchedulerSettings
from pixelpool.engine import policy
from pixelpool.engine.handle import MachineGone, WorkerHandle
from pixelpool.engine.membership import Machines, Membership
from pixelpool.engine.messages import (
    Admin,
    AdminDone,
    BatchDenoised,
    BatchDone,
    BatchStarted,
    CancelJob,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
)
from pixelpool.engine.needs import named_models
from pixelpool.engine.refusals import NoDeviceFits, NoDeviceServes
from pixelpool.engine.slot import Finishing, Slot
from pixelpool.engine.task import EngineListener, Task
from pixelpool.pipelines.base import WorkItem

log = logging.getLogger(__name__)

WATCHDOG_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
# Sees each batch the scheduler starts (its RunBatch) and every message from a worker;
# metrics are counted from these in this process, so workers need no metrics code.
Watcher = Callable[[Slot, object], None]
# Looks for devices that joined, calling `Scheduler.add_slot` for each new one, and
# (when its flag says refresh) asks every machine again what it has; pool.py builds it.
Discover = Callable[["Scheduler", bool], Awaitable[None]]


def restart_delay(crashes: int) -> float:
    """Back off a worker that keeps dying: 0.5 s, 1 s, 2 s ... up to 30 s, by deaths in a row
    (a worker that finished a batch since its last death starts again at 0.5 s)."""
    return min(RESTART_BACKOFF_MAX_S, 0.25 * 2 ** min(crashes, 7))


class Scheduler(Machines):
    def __init__(
        self,
        slots: list[Slot],
        listener: EngineListener,
        settings: SchedulerSettings,
        respawn: Callable[[Slot], WorkerHandle] | None = None,
        clock: Callable[[], float] = time.monotonic,
        nodes: Callable[[], list[dict[str, Any]]] | None = None,
        discover: Discover | None = None,
        discover_interval_s: float = 0.0,
        membership: Membership | None = None,
    ) -> None:
        self.slots = slots
        self.membership = membership
        self._discover = discover
        self._discover_s = discover_interval_s
        self._discovery: asyncio.Task[None] | None = None
        self._nodes = nodes
        self.listener = listener
        self.settings = settings
        self._respawn = respawn
        self._clock = clock
        self.queue = policy.Queue(settings)
        self._admin: dict[str, tuple[Slot, asyncio.Future[dict[str, Any]]]] = {}
        self._restart_at: dict[int, float] = {}  # id(slot) -> when to start its new worker
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[list[None]] | None = None  # the workers' first start
        self._stopping = False
        # Deaths per device since its worker last finished a batch: the respawn backoff
        # grows with these, not with every restart in the server's life.
        self._crashes: dict[str, int] = {}
        self.watchers: list[Watcher] = []

    # --- lifecycle -------------------------------------------------------------

    async def start(self, run_loop: bool = True) -> None:
        """Start the workers and (unless a test drives `step` itself) the dispatch loop.

        With the loop, workers start in the background, all at once: the server
        answers from its first second (`/ready` says when a worker is up) while a CPU
        worker's first start waits for the fork server's imports (~10 s). A worker
        that cannot start is tried again with back-off, as at any later start."""
        starts = asyncio.gather(*(self._start_worker(slot) for slot in self.slots))
        if not run_loop:
            await starts
            return
        self._starting = starts
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        if self._discover is not None and self._discover_s > 0:
            self._discovery = asyncio.create_task(self._discover_loop(), name="discover")

    async def _start_worker(self, slot: Slot) -> None:
        slot.last_seen = slot.starting_since = self._clock()
        try:
            await slot.handle.start(self._on_message, self._on_exit)
        except Exception as exc:
            self._start_failed(slot, exc, self._clock())
            self._wake.set()  # the loop's next step starts it again when due

    async def add_slot(self, slot: Slot) -> None:
        """A device that joined while running (a new node): start its worker; it takes
        work once it reports ready. A start that fails is retried with back-off."""
        if self._stopping or any(s.device_id == slot.device_id for s in self.slots):
            return
        log.info("device %s joined", slot.device_id)
        self.slots.append(slot)
        await self._start_worker(slot)
        self._wake.set()

    async def rediscover(self, refresh: bool = True) -> None:
        """Look for new devices now and (`refresh`, after a model rescan) ask every
        machine again which models it has."""
        if self._discover is None or self._stopping:
            return
        try:
            await self._discover(self, refresh)
        except Exception:  # the cluster may be busy: the next round tries again
            log.exception("looking for new devices failed")

    async def _discover_loop(self) -> None:
        while True:
            await asyncio.sleep(self._discover_s)
            await self.rediscover()  # new nodes, and each node's models again

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._discovery):
            if task is not None:
                task.cancel()
        for slot, future in self._admin.values():
            if not future.done():
                future.set_result(self._admin_report(slot, "server stopping"))
        self._admin.clear()
        if self._starting is not None:  # a start under way ends first: then it stops
            await asyncio.gather(self._starting, return_exceptions=True)
        await asyncio.gather(*(s.handle.stop() for s in self.slots), return_exceptions=True)

    @property
    def ready(self) -> bool:
        return any(s.ready for s in self.slots)

    # --- requests from the jobs layer --------------------------------------------

    def check(self, task: Task) -> None:
        """Raise NoDeviceFits, saying why, if no device could ever run the task
        (NoDeviceServes when none is configured for its family, or no live machine has
        its models; InputsTooLarge when its inputs may not travel to a machine)."""
        if self.membership is not None:
            task.needs = named_models(task.params, self.membership.known_models())
        missing = policy.missing(task, self.slots)
        if missing is not None:
            raise NoDeviceServes(*missing)
        reason = policy.refusal(task, self.slots)
        if reason is not None:
            raise NoDeviceFits(reason)
        if self.membership is not None:
            self.membership.vet(task)

    def submit(self, task: Task) -> None:
        """Queue a task (after `check`); it runs when a fitting worker is free."""
        self.check(task)
        task.submitted = self._clock()  # ageing and the batch window run on this clock
        self.queue.add(task)
        self._wake.set()

    def cancel(self, job_id: str) -> str:
        """'cancelled' if it was queued, 'cancelling' if running, 'unknown' otherwise."""
        task = self.queue.remove(job_id)
        if task is not None:
            self.listener.job_failed(job_id, "cancelled", "cancelled")
            return "cancelled"
        for slot in self.slots:
            running = next((t for t in slot.tasks() if t.job_id == job_id), None)
            if running is not None:
                running.cancel_requested = True  # also if its worker dies before it stops
                with contextlib.suppress(OSError, RuntimeError):
                    slot.handle.send(CancelJob(job_id))
                return "cancelling"
        return "unknown"

    async def admin(
        self, device_id: str | None, op: str, family: str, model: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Run a cache command (load/unload/pin/unpin) on one device or all; return reports."""
        slots = [s for s in self.slots if device_id in (None, s.device_id)]
        if not slots:
            raise KeyError(device_id)
        futures = []
        for slot in slots:
            request_id = uuid.uuid4().hex
            future = asyncio.get_running_loop().create_future()
            try:
                slot.handle.send(Admin(request_id, op, family, model))
            except (OSError, RuntimeError) as exc:  # restarting: say so, do not raise
                future.set_result(self._admin_report(slot, f"worker unavailable: {exc}"))
            else:
                self._admin[request_id] = (slot, future)
            futures.append(future)
        return list(await asyncio.gather(*futures))

    @staticmethod
    def _admin_report(slot: Slot, error: str | None) -> dict[str, Any]:
        return {"device": slot.device_id, "error": error, "cache": slot.cache}

    def queue_depth(self) -> int:
        return len(self.queue)

    def snapshot(self) -> list[dict[str, Any]]:
        return [slot.snapshot() for slot in self.slots]

    def nodes(self) -> list[dict[str, Any]]:
        """The machines under the workers, as the backend describes them (local: none)."""
        return self._nodes() if self._nodes is not None else []

    def model_nodes(self, model_path: str) -> list[str]:
        """The live machines (by the name their workers give) that have the model."""
        names = {
            s.handle.describe().get("node")
            for s in self.slots
            if s.has_model(model_path) and not s.gone
        }
        return sorted(n for n in names if n)

    # --- dispatch --------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                delay = await self.step()
            except Exception:  # a bug here must not stop every later dispatch
                log.exception("scheduler step failed")
                delay = WATCHDOG_S
            self._wake.clear()
            timeout = WATCHDOG_S if delay is None else min(delay, WATCHDOG_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def step(self) -> float | None:
        """One round: start due workers, start every batch that can start, check
        heartbeats. Returns seconds until something is due (None: nothing)."""
        now = self._clock()
        due = [await self._restart_due(now), self._dispatch(now)]
        self._watchdog(now)
        due = [d for d in (*due, self._expire(now)) if d is not None]
        return min(due) if due else None

    def _dispatch(self, now: float) -> float | None:
        """Start every batch that can start now; return seconds until the next check."""
        next_check: float | None = None
        for slot in self.slots:
            if not slot.idle or not len(self.queue):
                continue
            # Devices of its kind share the queue (policy.share): a GPU does not leave half
            # of it to a CPU worker, many times slower, that is enabled beside it.
            peers = [s for s in self.slots if s.handle.device.kind == slot.handle.device.kind]
            idle = [s for s in peers if s.idle]
            running = [s.batch for s in peers if s.batch and not s.idle and not s.gone]
            coming = [s for s in peers if s.coming(now)]
            try:
                plan = self.queue.plan(slot, now, idle, running, coming)
            except Exception:
                log.exception("planning a batch for %s failed", slot.device_id)
                self._fail_unplannable(slot, now)
                continue
            if plan is None:
                continue
            if plan.wait_s > 0:
                next_check = plan.wait_s if next_check is None else min(next_check, plan.wait_s)
                continue
            self.queue.take(plan.batch)
            self._start(slot, plan.batch, now)
        return next_check

    def _fail_unplannable(self, slot: Slot, now: float) -> None:
        """Fail the jobs that planning cannot get past, each with what it raised; the others
        stay queued and the next round plans without them."""
        culprits = self.queue.unplannable(slot, now)
        for task, exc in culprits:
            self.queue.remove(task.job_id)
            reason = f"internal error while scheduling this job: {type(exc).__name__}: {exc}"
            self.listener.job_failed(task.job_id, reason, "error")
        if culprits:  # plan again at once without them (none: the watchdog tick retries)
            self._wake.set()

    def _start(self, slot: Slot, batch: list[Task], now: float) -> None:
        slot.batch_id = uuid.uuid4().hex
        slot.batch, slot.batch_size, slot.batch_group = batch, len(batch), batch[0].group
        slot.batch_started, slot.batch_answered = now, None
        head = batch[0]
        items = [WorkItem(t.job_id, t.op, t.params) for t in batch]
        run = RunBatch(slot.batch_id, head.family, head.model, items)
        try:
            slot.handle.send(run)
        except (OSError, RuntimeError) as exc:
            log.warning("cannot reach worker %s: %s", slot.device_id, exc)
            return  # the exit callback re-queues the batch
        except Exception as exc:  # the batch cannot be sent (e.g. a parameter that does not
            # pickle): nothing reached the worker, so fail these jobs and keep the device
            log.exception("cannot send a batch to %s", slot.device_id)
            slot.batch, slot.batch_id = [], None
            for task in batch:
                self.listener.job_failed(task.job_id, f"cannot be sent to a worker: {exc}", "error")
            return
        self._watch(slot, run)
        for task in batch:
            self.listener.job_started(task.job_id, slot.device_id, len(batch))

    def _watchdog(self, now: float) -> None:
        """Kill a worker whose heartbeats stopped: it is hung; the exit path respawns it."""
        for slot in self.slots:
            silent = now - slot.last_seen
            if slot.ready and silent > self.settings.heartbeat_timeout_s and slot.handle.is_alive():
                log.error("worker %s silent for %.0fs: killing it", slot.device_id, silent)
                slot.ready = False
                slot.handle.kill()

    async def _restart_due(self, now: float) -> float | None:
        """Start the replacement workers whose back-off has passed."""
        next_due: float | None = None
        for slot in list(self.slots):  # add_slot may append while this awaits
            at = self._restart_at.get(id(slot))
            if at is None:
                continue
            if at > now:
                next_due = at - now if next_due is None else min(next_due, at - now)
                continue
            del self._restart_at[id(slot)]
            slot.last_seen = now
            try:
                await slot.handle.start(self._on_message, self._on_exit)
            except Exception as exc:
                slot.restarts += 1
                self._start_failed(slot, exc, now)
        return next_due

    def _start_failed(self, slot: Slot, exc: Exception, now: float) -> None:
        """Try again with back-off; a machine that left the cluster marks the slot gone."""
        slot.starting_since = None  # no longer counted as about to take work
        if isinstance(exc, MachineGone):
            log.warning("cannot start a worker for %s: %s", slot.device_id, exc)
            self.mark_gone(slot, now)
        else:
            log.error("cannot start a worker for %s; trying again", slot.device_id, exc_info=exc)
        crashes = self._crashes[slot.device_id] = self._crashes.get(slot.device_id, 0) + 1
        self._restart_at[id(slot)] = now + restart_delay(crashes)

    # --- worker callbacks (on the loop) -----------------------------------------------

    def _slot(self, handle: WorkerHandle) -> Slot | None:
        return next((s for s in self.slots if s.handle is handle), None)

    def _on_message(self, handle: WorkerHandle, message: object) -> None:
        slot = self._slot(handle)
        if slot is None:  # from a worker already replaced
            return
        slot.last_seen = self._clock()
        self._watch(slot, message)
        match message:
            case Ready(budget_bytes=budget, cache=cache):
                slot.ready, slot.budget_bytes, slot.cache = True, budget, cache
                slot.gone_since = slot.starting_since = None  # its first start is over
                log.info("worker %s ready %s", slot.device_id, handle.describe())
                self._wake.set()
            case BatchStarted(model_load_s=load_s):
                slot.batch_started = self._clock()
                if load_s > 0.05:
                    log.info("worker %s loaded model in %.2fs", slot.device_id, load_s)
            case Progress(job_ids=job_ids, step=step, total=total, stage=stage, previews=pv):
                for i, job_id in enumerate(job_ids):
                    preview = pv[i] if pv and i < len(pv) else None
                    self.listener.job_progress(job_id, step, total, stage, preview)
            case ItemResult(job_id=job_id, result=result):
                found = slot.find(job_id)
                started = found[2] if found is not None else slot.batch_started
                self._answer(slot, job_id)
                self.listener.job_finished(job_id, result, slot.device_id, self._clock() - started)
            case ItemFailed(job_id=job_id, error=error, kind="oom"):
                self._out_of_memory(slot, job_id, error)
            case ItemFailed(job_id=job_id, error=error, kind=kind):
                self._answer(slot, job_id)
                self.listener.job_failed(job_id, error, kind)
            case BatchDenoised(batch_id=batch_id) if batch_id == slot.batch_id:
                # The worker decodes this batch beside its next one: free for another.
                self._ran(slot)
                slot.finishing[batch_id] = Finishing(
                    slot.batch, slot.batch_size, slot.batch_started
                )
                slot.batch_id, slot.batch = None, []
                self._wake.set()
            case BatchDone(batch_id=batch_id, cache=cache):
                unreported: list[Task] = []
                if batch_id == slot.batch_id:
                    self._ran(slot)
                    unreported, slot.batch_id, slot.batch = slot.batch, None, []
                elif batch_id in slot.finishing:
                    unreported = slot.finishing.pop(batch_id).tasks
                for task in unreported:  # never left running forever
                    self.listener.job_failed(
                        task.job_id, "the worker ended the batch without a result", "error"
                    )
                self._crashes.pop(slot.device_id, None)  # healthy again: no backoff
                slot.cache = cache
                self._wake.set()
            case AdminDone(request_id=request_id, error=error, cache=cache):
                slot.cache = cache
                _, future = self._admin.pop(request_id, (None, None))
                if future is not None and not future.done():
                    future.set_result({"device": slot.device_id, "error": error, "cache": cache})

    def _ran(self, slot: Slot) -> None:
        """The slot's running batch has left the device: the policy learns how long it took."""
        now = self._clock()
        run_s = now - slot.batch_started
        answered = now if slot.batch_answered is None else slot.batch_answered
        self.queue.ran(slot.device_id, slot.batch_group, slot.batch_size, run_s, now, answered)

    def _watch(self, slot: Slot, message: object) -> None:
        for watch in self.watchers:
            try:
                watch(slot, message)
            except Exception:  # a metric must never disturb scheduling
                log.exception("watching %s from %s failed", type(message).__name__, slot.device_id)

    def _answer(self, slot: Slot, job_id: str) -> None:
        """The job has its outcome, for its client (who may now send the next request)."""
        if slot.batch_answered is None and any(t.job_id == job_id for t in slot.batch):
            slot.batch_answered = self._clock()
        self._settle(slot, job_id)

    def _settle(self, slot: Slot, job_id: str) -> None:
        """The job has its outcome: a worker dying later must not run it again."""
        slot.batch = [t for t in slot.batch if t.job_id != job_id]
        for finishing in slot.finishing.values():
            finishing.tasks = [t for t in finishing.tasks if t.job_id != job_id]

    def _out_of_memory(self, slot: Slot, job_id: str, error: str) -> None:
        """Retry with a smaller batch, then on another device, before failing the job."""
        found = slot.find(job_id)
        if found is None:
            self.listener.job_failed(job_id, error, "error")
            return
        task, batch_size, _started = found
        self._settle(slot, job_id)
        outcome = policy.after_out_of_memory(task, batch_size, slot.device_id, self.slots, error)
        self._apply(task, outcome)

    def _apply(self, task: Task, outcome: policy.Outcome) -> None:
        if outcome.action == "requeue":
            self.listener.job_requeued(task.job_id, outcome.reason, task.attempts)
            self.queue.add(task)
            self._wake.set()
        elif outcome.action == "cancel":
            self.listener.job_failed(task.job_id, "cancelled", "cancelled", task.attempts)
        else:
            self.listener.job_failed(task.job_id, outcome.reason, "error", task.attempts)

    def _on_exit(self, handle: WorkerHandle, reason: str) -> None:
        slot = self._slot(handle)
        if self._stopping or slot is None:
            return
        log.error("worker %s died: %s", slot.device_id, reason)
        lost, slot.batch, slot.batch_id, slot.ready = slot.tasks(), [], None, False
        slot.finishing = {}
        slot.cache = {}
        for request_id, (owner, future) in list(self._admin.items()):
            if owner is slot:  # only this device's requests: the others' workers live
                del self._admin[request_id]
                if not future.done():
                    future.set_result(self._admin_report(slot, reason))
        for task in lost:
            self._apply(task, policy.after_worker_lost(task, reason, self.settings.max_retries))
        if self._respawn is not None:
            slot.restarts += 1
            crashes = self._crashes[slot.device_id] = self._crashes.get(slot.device_id, 0) + 1
            slot.handle = self._respawn(slot)
            self._restart_at[id(slot)] = self._clock() + restart_delay(crashes)
            self._wake.set()
