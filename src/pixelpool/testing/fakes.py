"""A worker with no process, and a fake task family, for scheduler and job-service tests.

`FakeWorker` implements `WorkerHandle`: it records what the scheduler sends, and the
test decides what the worker does next (finish the batch, fail an item out of memory,
die, hang), so every event happens exactly when the test says, with no sleeps and no
threads. Callbacks run synchronously on the caller's (the event loop's) thread.
Only for policy tests: everything else runs real workers.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

from pixelpool import families
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.handle import OnExit, OnMessage, WorkerHandle
from pixelpool.engine.messages import (
    Admin,
    AdminDone,
    BatchDone,
    CancelJob,
    Heartbeat,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
    Stop,
)
from pixelpool.engine.slot import Slot
from pixelpool.engine.task import Task
from pixelpool.families.base import Cost, NoImageText, Operation, OpParams
from pixelpool.jobs.spec import JobSpec
from pixelpool.pipelines.base import Result

GIB = 1 << 30
FAKE_FAMILY = "fake"
FAKE_MODEL = {"name": "fake-model", "path": "fake/fake-model", "architecture": "fake",
              "format": "fake", "size_bytes": 0}  # fmt: skip


class FakeParams(OpParams):
    prompt: str = ""
    seed: int = 0


class FakeDescription(NoImageText):
    """The fake family as the job service sees it: free, images without parameters."""

    name = FAKE_FAMILY
    folders = frozenset({"fake"})
    suffixes: frozenset[str] = frozenset()
    model_dir_marker = None
    operations = MappingProxyType({"make": Operation(FakeParams, "image")})

    def detect(self, folder: Any, path: Any) -> None:
        return None

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        return Cost(int(model.get("size_bytes") or 0), 0, 0.0)


families.register(FakeDescription())


def fake_device(device_id: str = "fake0", memory_gib: float = 8) -> DeviceInfo:
    return DeviceInfo(device_id, "cpu", 0, f"fake {device_id}", int(memory_gib * GIB))


def fake_result(seed: int = 0, size: int = 8) -> Result:
    """A tiny image, different per seed, as a pipeline would return it."""
    image = np.full((size, size, 3), seed % 256, dtype=np.uint8)
    return Result(images=[image], seeds=[seed], info={"family": FAKE_FAMILY})


def fake_params(seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {"prompt": "a fake", "width": 8, "height": 8, "steps": 1, "cfg_scale": 1.0,
            "seed": seed, **extra}  # fmt: skip


def fake_task(
    job_id: str,
    owner: str | None = None,
    group: str = "g",
    priority: int = 100,
    submitted: float = 0.0,
    item_bytes: int = 0,
    model_bytes: int = 0,
) -> Task:
    """A task of the fake family; tasks with equal `group` may share a batch."""
    return Task(
        job_id=job_id,
        family=FAKE_FAMILY,
        op="make",
        model=dict(FAKE_MODEL),
        params=fake_params(),
        batch_key=(group,),
        priority=priority,
        owner=owner,
        submitted=submitted,
        model_bytes=model_bytes,
        item_bytes=item_bytes,
    )


def fake_spec(seed: int = 0, group: str = "g", priority: int = 100) -> JobSpec:
    """A JobSpec of the fake family (what the job service turns into a fake task)."""
    return JobSpec(
        op="make",
        family=FAKE_FAMILY,
        model=dict(FAKE_MODEL),
        params=fake_params(seed),
        batch_key=[group],
        priority=priority,
    )


class FakeWorker(WorkerHandle):
    """A worker the test drives. `auto_ready`: report Ready as soon as it starts."""

    def __init__(
        self,
        device: DeviceInfo | None = None,
        budget_bytes: int = 0,
        auto_ready: bool = True,
        failed_starts: int = 0,
    ) -> None:
        self.device = device or fake_device()
        self.failed_starts = failed_starts  # this many starts fail (a spawn that fails)
        self.budget_bytes = budget_bytes or self.device.total_memory_bytes
        self.auto_ready = auto_ready
        self.sent: list[object] = []
        self.alive = False
        self.started = 0
        self.killed = False
        self._on_message: OnMessage | None = None
        self._on_exit: OnExit | None = None
        self._done: set[str] = set()  # batches that ended
        self._answered: set[str] = set()  # admin requests answered

    # --- WorkerHandle --------------------------------------------------------------

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        if self.failed_starts > 0:
            self.failed_starts -= 1
            raise OSError("cannot start the fake worker")
        self._on_message, self._on_exit = on_message, on_exit
        self.alive, self.started = True, self.started + 1
        if self.auto_ready:
            self.ready()

    def send(self, message: object) -> None:
        if not self.alive:
            raise OSError("fake worker is not running")
        self.sent.append(message)

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed = True
        self.die("worker process exited with code -9")

    async def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            self.sent.append(Stop())
        self.alive = False

    # --- what the test makes it do -------------------------------------------------

    def _emit(self, message: object) -> None:
        assert self._on_message is not None, "start the worker first"
        self._on_message(self, message)

    def ready(self, cache: dict[str, Any] | None = None) -> None:
        self._emit(Ready(self.device.to_dict(), 0, self.budget_bytes, cache or {}))

    def heartbeat(self) -> None:
        self._emit(Heartbeat(0.0))

    @property
    def batches(self) -> list[RunBatch]:
        return [m for m in self.sent if isinstance(m, RunBatch)]

    @property
    def batch(self) -> RunBatch | None:
        """The batch it runs now (the last one sent, until `done`)."""
        batches = self.batches
        return batches[-1] if batches and not self._closed(batches[-1]) else None

    def _closed(self, batch: RunBatch) -> bool:
        return batch.batch_id in self._done

    def job_ids(self) -> list[str]:
        batch = self.batch
        return [item.job_id for item in batch.items] if batch else []

    def cancels(self) -> list[str]:
        return [m.job_id for m in self.sent if isinstance(m, CancelJob)]

    def progress(self, step: int, total: int) -> None:
        batch = self._current()
        self._emit(Progress(batch.batch_id, self.job_ids(), step, total, "denoise"))

    def finish(self, job_ids: list[str] | None = None, done: bool = True) -> None:
        """Each item (or those named) succeeds; `done`: then the batch ends."""
        batch = self._current()
        for item in batch.items:
            if job_ids is None or item.job_id in job_ids:
                self._emit(ItemResult(item.job_id, fake_result(int(item.params.get("seed", 0)))))
        if done:
            self.done()

    def fail(self, job_id: str, error: str = "boom", kind: str = "error") -> None:
        """One item fails (kind: error | oom | cancelled); the batch goes on."""
        self._current()
        self._emit(ItemFailed(job_id, error, kind))

    def oom(self, done: bool = True) -> None:
        """Every item of the batch runs out of memory, as a too-big batch does."""
        for job_id in self.job_ids():
            self.fail(job_id, "CUDA out of memory (fake)", "oom")
        if done:
            self.done()

    def done(self) -> None:
        batch = self._current()
        self._done.add(batch.batch_id)
        self._emit(BatchDone(batch.batch_id, 0.0, {}))

    def admin_requests(self) -> list[Admin]:
        return [m for m in self.sent if isinstance(m, Admin) and m.request_id not in self._answered]

    def answer_admin(self, error: str | None = None) -> None:
        """Answer every admin request not answered yet."""
        for request in self.admin_requests():
            self._answered.add(request.request_id)
            self._emit(AdminDone(request.request_id, error, {"models": []}))

    def die(self, reason: str = "worker process exited with code -11") -> None:
        """The process is gone: the handle reports its exit, as the reader thread does."""
        if not self.alive:
            return
        self.alive = False
        assert self._on_exit is not None
        self._on_exit(self, reason)

    def _current(self) -> RunBatch:
        batch = self.batch
        assert batch is not None, "the worker runs no batch"
        return batch


def fake_slots(count: int, budget_gib: float = 8) -> list[Slot]:
    """`count` ready-to-start fake workers, each behind a slot that runs anything."""
    return [Slot(FakeWorker(fake_device(f"fake{i}", budget_gib)), ["*"]) for i in range(count)]


class FakeClock:
    """A monotonic clock the test moves: `clock.advance(31)` makes 31 s pass at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ledger:
    """An EngineListener that records every report and checks that each job ends once,
    and never starts again after it ended."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.ended: dict[str, tuple[str, str]] = {}  # job -> (ok | error | cancelled, detail)
        self.attempts: dict[str, int] = {}

    def _alive(self, job_id: str, what: str) -> None:
        assert job_id not in self.ended, f"{job_id} {what} after it ended {self.ended[job_id]}"

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None:
        self._alive(job_id, "started")
        self.events.append(("started", job_id, (device_id, batch_size)))

    def job_progress(
        self, job_id: str, step: int, total: int, stage: str, preview: Any | None = None
    ) -> None:
        self.events.append(("progress", job_id, step))

    def job_finished(self, job_id: str, result: Result, device_id: str, run_s: float) -> None:
        self._alive(job_id, "finished")
        self.ended[job_id] = ("ok", device_id)

    def job_failed(self, job_id: str, error: str, kind: str, attempts: int | None = None) -> None:
        self._alive(job_id, "failed")
        self.ended[job_id] = (kind, error)
        if attempts is not None:
            self.attempts[job_id] = attempts

    def job_requeued(self, job_id: str, reason: str, attempts: int) -> None:
        self._alive(job_id, "requeued")
        self.events.append(("requeued", job_id, reason))
        self.attempts[job_id] = attempts

    def started(self) -> list[str]:
        return [job for kind, job, _ in self.events if kind == "started"]
