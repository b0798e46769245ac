"""The job service: accept, persist, hand to the engine, and record what comes back.

Every dialect goes through `submit`. A job is in the store before its id is
returned; engine callbacks turn into store writes, artifacts and events.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pixelpool import families
from pixelpool.config import Settings
from pixelpool.engine.refusals import InputsTooLarge, NoDeviceFits, NoDeviceServes
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.task import Task
from pixelpool.jobs.artifacts import ArtifactStore
from pixelpool.jobs.diskspace import MESSAGE as STORAGE_FULL
from pixelpool.jobs.diskspace import DiskSpace, StorageFull, is_disk_full
from pixelpool.jobs.encode import NPY_MEDIA_TYPE, encode_arrays, encode_image, encode_result
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.lifecycle import log_job_event
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus
from pixelpool.jobs.store import JobStore
from pixelpool.logs import note_job
from pixelpool.pipelines.base import Result
from pixelpool.redact import host_paths

__all__ = [
    "InputsTooLarge", "JobService", "NoDeviceFits", "NoDeviceServes", "QueueFull", "StorageFull",
]  # fmt: skip

log = logging.getLogger(__name__)

FINISHED_KEPT = 1000
WRITE_RETRY_S = (0.05, 0.5, 2.0)  # waits between tries of a store write
# Called with (record, event type, event fields) for every event a job publishes.
JobObserver = Callable[[JobRecord, str, dict[str, Any]], None]


class QueueFull(Exception):
    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def new_job_id() -> str:
    return secrets.token_hex(16)


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        artifacts: ArtifactStore,
        bus: EventBus,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.bus = bus
        self.scheduler: Scheduler | None = None
        self._active: dict[str, JobRecord] = {}  # queued or running, the live truth
        self._progress: dict[str, dict[str, Any]] = {}
        self._done: dict[str, asyncio.Event] = {}
        # Just-finished records, for waiters woken by `_done` (bounded, oldest dropped).
        self._finished: OrderedDict[str, JobRecord] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        # Finished jobs whose final state the store refused: reported from here.
        self._unsaved: dict[str, JobRecord] = {}
        self.write_retry_s: tuple[float, ...] = WRITE_RETRY_S
        # Lifecycle logs, and metrics when the app adds them: see `_publish`.
        self.observers: list[JobObserver] = [log_job_event]
        self._dirs = (settings.server.models_dir, settings.server.data_dir)  # out of errors
        self.space = DiskSpace(
            (settings.server.data_dir, settings.job_store_path.parent),
            settings.storage.min_free_mb * 2**20,
        )

    def attach(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    # --- accepting work ---------------------------------------------------------------

    async def submit(
        self, spec: JobSpec, owner: str | None = None, idempotency_key: str | None = None
    ) -> JobRecord:
        record = await self._submit(spec, owner, idempotency_key)
        note_job(record.id)  # the request's access log line names the job
        return record

    async def _submit(
        self, spec: JobSpec, owner: str | None, idempotency_key: str | None
    ) -> JobRecord:
        if idempotency_key:
            existing = await self.store.by_idempotency_key(owner, idempotency_key)
            if existing is not None:
                return self._active.get(existing.id, existing)
        self._check_queue(owner)
        self.space.check()  # before anything is written for it
        record = JobRecord(
            id=new_job_id(),
            spec=spec,
            owner=owner,
            status=JobStatus.queued,
            created=time.time(),
            idempotency_key=idempotency_key,
        )
        task = self._task(record)
        assert self.scheduler is not None
        self.scheduler.check(task)  # refuse now what no device could ever run
        try:
            await self.store.insert(record)  # durable before anyone learns the id
        except sqlite3.IntegrityError:
            # A concurrent request with the same idempotency key won the race.
            existing = await self.store.by_idempotency_key(owner, idempotency_key or "")
            if existing is None:
                raise
            return self._active.get(existing.id, existing)
        try:
            self._enqueue(record, task)
        except NoDeviceFits as exc:  # the last node with its model left while it was written
            await self._finish(record.id, JobStatus.failed, error=f"cannot run: {exc}")
            raise
        return record

    def _check_queue(self, owner: str | None) -> None:
        limits = self.settings.scheduler
        queued = [r for r in self._active.values() if r.status is JobStatus.queued]
        if len(queued) >= limits.max_queue:
            raise QueueFull(f"queue is full ({limits.max_queue} jobs)")
        if sum(1 for r in queued if r.owner == owner) >= limits.max_queue_per_key:
            raise QueueFull(f"too many queued jobs for this key ({limits.max_queue_per_key})")

    @staticmethod
    def _task(record: JobRecord) -> Task:
        spec = record.spec
        cost = families.estimate_cost(spec.family, spec.model, spec.params)
        return Task(
            job_id=record.id,
            family=spec.family,
            op=spec.op,
            model=spec.model,
            params=spec.params,
            batch_key=tuple(spec.batch_key),
            priority=spec.priority,
            owner=record.owner,
            attempts=record.attempts,
            model_bytes=cost.model_bytes,
            item_bytes=cost.item_bytes,
        )

    def _enqueue(self, record: JobRecord, task: Task, reason: str | None = None) -> None:
        assert self.scheduler is not None
        self._active[record.id] = record
        self._done[record.id] = asyncio.Event()
        self.scheduler.submit(task)
        self._publish(record, "queued", **({"reason": reason} if reason else {}))

    async def recover(self) -> int:
        """Run again every job that was queued or running when the server stopped.

        One job that cannot be re-queued fails with the reason; it never stops the start."""
        jobs = await self.store.unfinished()
        for record in jobs:
            try:
                await self._recover_one(record)
            except Exception as exc:  # one bad row must not stop the start
                if not isinstance(exc, NoDeviceFits):
                    log.exception("cannot re-queue job %s after restart", record.id)
                self._active[record.id] = record
                self._done.setdefault(record.id, asyncio.Event())
                await self._finish(
                    record.id, JobStatus.failed, error=f"cannot run after restart: {exc}"
                )
        if jobs:
            log.info("re-queued %d unfinished jobs from the store", len(jobs))
        return len(jobs)

    async def _recover_one(self, record: JobRecord) -> None:
        # Its events from before the restart first, so a replay sees them all.
        await self.bus.restore(record.id)
        record.status, record.started, record.device = JobStatus.queued, None, None
        task = self._task(record)
        assert self.scheduler is not None
        self.scheduler.check(task)  # NoDeviceFits: `recover` fails the job, saying why
        await self.store.update(record.id, status=JobStatus.queued, started=None, device=None)
        self._enqueue(record, task, reason="restart")

    # --- reading ---------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        record = (
            self._active.get(job_id) or self._unsaved.get(job_id) or await self.store.get(job_id)
        )
        if (
            record is not None
            and record.status is JobStatus.completed
            and record.expires is not None
            and record.expires < time.time()
        ):
            record.status, record.result = JobStatus.expired, {}  # the sweep deletes it later
        return record

    def progress(self, job_id: str) -> dict[str, Any]:
        return self._progress.get(job_id, {})

    async def wait(self, job_id: str) -> JobRecord:
        """The job once finished: the record `_finish` wrote, without reading it back."""
        event = self._done.get(job_id)
        if event is not None:
            await event.wait()
            finished = self._finished.get(job_id)
            if finished is not None:
                return finished
        record = self._unsaved.get(job_id) or await self.store.get(job_id)
        assert record is not None
        return record

    async def cancel(self, job_id: str) -> str:
        record = await self.get(job_id)
        if record is None:
            raise KeyError(job_id)
        if record.status.finished:
            return "already_completed" if record.status is JobStatus.completed else record.status
        assert self.scheduler is not None
        outcome = self.scheduler.cancel(job_id)
        return "cancelled" if outcome == "cancelled" else "cancelling"

    def active_count(self) -> int:
        return len(self._active)

    def forget_finished(self, older_than_s: float) -> None:
        """Drop the just-finished records kept for waiters once they are this old (the
        store has them; a waiter reads its record within moments of the job's end)."""
        cutoff = time.time() - older_than_s
        while self._finished:
            job_id, record = next(iter(self._finished.items()))
            if (record.finished or 0) > cutoff:
                break
            del self._finished[job_id]

    # --- engine callbacks (EngineListener, on the loop) ------------------------------

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None:
        record = self._active.get(job_id)
        if record is None:
            return
        record.status, record.started = JobStatus.running, time.time()
        record.device, record.batch_size = device_id, batch_size
        self._spawn(
            self._write(
                job_id,
                status=JobStatus.running,
                started=record.started,
                device=device_id,
                batch_size=batch_size,
            ),
            f"job {job_id}: recording its start",
        )
        self._publish(record, "started")

    def job_progress(
        self, job_id: str, step: int, total: int, stage: str, preview: Any | None = None
    ) -> None:
        record = self._active.get(job_id)
        if record is None:
            return
        self._progress[job_id] = {"step": step, "total": total, "stage": stage}
        self._publish(record, "progress")
        if preview is not None:
            self._spawn(
                self._publish_preview(record, step, total, preview), f"job {job_id}: preview"
            )

    def job_finished(self, job_id: str, result: Result, device_id: str, run_s: float) -> None:
        self._spawn(self._complete(job_id, result, run_s), f"job {job_id}: storing its result")

    def job_failed(self, job_id: str, error: str, kind: str, attempts: int | None = None) -> None:
        status = JobStatus.cancelled if kind == "cancelled" else JobStatus.failed
        record = self._active.get(job_id)
        if record is not None and attempts is not None:
            record.attempts = attempts  # written with the final state
        self._spawn(self._finish(job_id, status, error=error), f"job {job_id}: recording its end")

    def job_requeued(self, job_id: str, reason: str, attempts: int) -> None:
        """Back in the queue. `attempts` is the engine's count of runs lost to a dead or
        hung worker (an out-of-memory retry is not one), so it agrees with its messages."""
        record = self._active.get(job_id)
        if record is None:
            return
        record.status, record.attempts = JobStatus.queued, attempts
        record.started, record.device = None, None
        self._spawn(
            self._write(job_id, status=JobStatus.queued, attempts=attempts, started=None,
                        device=None),
            f"job {job_id}: recording its requeue",
        )  # fmt: skip
        self._publish(record, "queued", reason=reason)

    # --- completion ----------------------------------------------------------------

    async def _complete(self, job_id: str, result: Result, run_s: float) -> None:
        record = self._active.get(job_id)
        if record is None:
            return
        spec = record.spec
        try:
            family = families.get(spec.family)
            kind = family.operations[spec.op].result
            text = family.image_text(spec.op, spec.params, spec.model["name"])
            payloads, info = await asyncio.to_thread(
                encode_result, result.images, result.info, spec.output_format, text,
                spec.output_quality,
            )  # fmt: skip
            arts = [await self.artifacts.put(data, media, record.owner) for data, media in payloads]
            described = [{"id": a.id, "media_type": a.media_type, "size": a.size} for a in arts]
            for entry, img in zip(described, result.images, strict=False):  # images first
                entry.update(width=int(img.shape[1]), height=int(img.shape[0]))
            for _, data, meta in await asyncio.to_thread(encode_arrays, result.arrays):
                art = await self.artifacts.put(data, NPY_MEDIA_TYPE, record.owner)
                described.append({"id": art.id, "media_type": art.media_type, "size": art.size,
                                  **meta})  # fmt: skip
        except Exception as exc:
            reason = f"{STORAGE_FULL} ({exc})" if is_disk_full(exc) else str(exc)
            if is_disk_full(exc):  # an operator's problem, said in one line, not a bug's trace
                log.error("storing result of %s failed: %s", job_id, reason)
            else:
                log.exception("storing result of %s failed", job_id)
            await self._finish(job_id, JobStatus.failed, error=f"storing result failed: {reason}")
            return
        if result.caches:
            await self._send_caches(record, result.caches)
        # A JSON result (tags) is its info; images, latents and arrays are artifacts.
        payload = {"kind": kind, "artifacts": described, "seeds": result.seeds, "info": info,
                   "run_s": run_s}  # fmt: skip
        await self._finish(job_id, JobStatus.completed, result=payload)

    async def _send_caches(self, record: JobRecord, caches: dict[str, Any]) -> None:
        """The job's round-trip caches (FoxBurrow's `clip_embeddings`, `latent_cache`) to
        its owner's live connections, before `completed`; never stored (megabytes)."""
        try:
            messages = await asyncio.to_thread(cache_messages, caches)
        except Exception:
            log.exception("job %s: encoding its caches failed; not sent", record.id)
            return
        for kind, body in messages:
            self.bus.broadcast({"type": kind, "job_id": record.id, **body, "owner": record.owner})

    async def _finish(self, job_id: str, status: JobStatus, **fields: Any) -> None:
        """The job's final state: in memory, to waiters and subscribers, and to the store.

        If the store cannot take it even after retries, the job still ends here (this
        process reports it, from memory); the store keeps it unfinished, so the next
        start runs it again rather than losing it."""
        record = self._active.pop(job_id, None)
        if record is None:
            return
        now = time.time()
        record.status, record.finished = status, now
        error = fields.get("error")
        record.error = None if error is None else host_paths(error, self._dirs)
        record.result = fields.get("result", {})
        record.expires = now + self.settings.storage.ttl_s
        try:
            await self._write(
                job_id, status=status, finished=now, error=record.error,
                result=record.result, expires=record.expires, attempts=record.attempts,
            )  # fmt: skip
        except Exception:
            log.exception("job %s ended %s but the store could not record it", job_id, status)
            self._unsaved[job_id] = record
        self._progress.pop(job_id, None)
        event = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}[status]
        self._publish(record, event, error=record.error)
        done = self._done.pop(job_id, None)
        if done is not None:
            self._finished[job_id] = record
            while len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)
            done.set()

    async def _write(self, job_id: str, **fields: Any) -> None:
        """A store update, retried a few times (a locked or briefly failing disk)."""
        final = "finished" in fields
        for delay in (*self.write_retry_s, None):
            try:
                await self.store.update(job_id, **fields)
                return
            except Exception as exc:
                if delay is None:
                    raise
                log.warning("writing job %s failed (%s); retrying in %.2fs", job_id, exc, delay)
                await asyncio.sleep(delay)
            record = self._active.get(job_id)
            if not final and (record is None or record.status != fields.get("status")):
                return  # overtaken by a later state: a stale retry must not overwrite it

    async def _publish_preview(self, record: JobRecord, step: int, total: int, image: Any) -> None:
        data = await asyncio.to_thread(encode_image, image, "png")
        self._publish(
            record, "preview", step=step, total=total, media_type="image/png",
            image=base64.b64encode(data).decode(),
        )  # fmt: skip

    def _publish(self, record: JobRecord, kind: str, **extra: Any) -> None:
        for observe in self.observers:
            try:
                observe(record, kind, extra)
            except Exception:  # a log or metric must never lose a job's event
                log.exception("observing job %s (%s) failed", record.id, kind)
        event = {
            "type": kind,
            "job_id": record.id,
            "status": record.status.value,
            "gpus": [record.device] if record.device else [],
            **extra,
        }
        if kind == "progress":
            p = self._progress.get(record.id, {})
            total = p.get("total") or 1
            event.update(p, progress=p.get("step", 0) / total)
        self.bus.publish({**event, "owner": record.owner})

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._background.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        """A background write ended: an error in it is logged, never dropped."""
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def settle(self) -> None:
        """Wait until the background work started so far (and what it starts) has ended."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def drain(self) -> None:
        """Wait for pending store writes, then write the buffered events (at shutdown)."""
        await self.settle()
        for job_id, record in list(self._unsaved.items()):  # one last try
            try:
                await self.store.update(
                    job_id, status=record.status, finished=record.finished, error=record.error,
                    result=record.result, expires=record.expires, attempts=record.attempts,
                )  # fmt: skip
            except Exception:
                log.exception("job %s: final state still not stored; it runs again", job_id)
            else:
                del self._unsaved[job_id]
        await self.bus.close()


def cache_messages(caches: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Result.caches -> WebSocket message bodies, raw bytes as base64 text."""
    out: list[tuple[str, dict[str, Any]]] = []
    entries = caches.get("clip_embeddings")
    if entries:
        out.append(("clip_embeddings", {"entries": [
            {**e, "data": base64.b64encode(e["data"]).decode("ascii")} for e in entries
        ]}))  # fmt: skip
    latents = caches.get("latent_cache")
    if latents:
        out.append(
            ("latent_cache", {**latents, "data": base64.b64encode(latents["data"]).decode("ascii")})
        )
    return out
