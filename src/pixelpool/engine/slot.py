"""The scheduler's view of one worker: what it can run, holds, and is doing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pixelpool.engine.handle import WorkerHandle
from pixelpool.engine.task import Task

# How long a device whose worker is starting counts as about to take work. A first start
# imports torch (CPU: ~10 s behind the fork server; a Ray actor is placed first); one
# that takes longer is more likely stuck (an actor Ray cannot place) than about to come.
FIRST_START_S = 30.0


@dataclass
class Finishing:
    """A batch the worker is decoding beside its next one (`overlap_decode`)."""

    tasks: list[Task]  # still without an outcome
    size: int
    started: float


@dataclass
class Slot:
    handle: WorkerHandle
    capabilities: list[str]
    families: frozenset[str] | None = None  # devices.<id>.families; None: every family
    models: frozenset[str] | None = None  # model paths its machine has; None: every one
    ready: bool = False
    budget_bytes: int = 0  # the device tier budget the worker reported
    batch_id: str | None = None
    batch: list[Task] = field(default_factory=list)  # its tasks still without an outcome
    batch_size: int = 0  # how many tasks the batch started with
    batch_group: tuple[Any, ...] = ()  # the batch's Task.group
    batch_started: float = 0.0
    batch_answered: float | None = None  # when the running batch's first job got its outcome
    finishing: dict[str, Finishing] = field(default_factory=dict)  # batch id -> its decode
    activation_scale: float = 1.0  # 0.5 where the device computes in 16 bits
    cache: dict[str, Any] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    restarts: int = 0
    gone_since: float | None = None  # its machine left the cluster (scheduler's clock)
    starting_since: float | None = None  # its first start began (None: ready since, or failed)

    @property
    def gone(self) -> bool:
        return self.gone_since is not None

    @property
    def idle(self) -> bool:
        return self.ready and self.batch_id is None

    def coming(self, now: float, within_s: float = FIRST_START_S) -> bool:
        """Its worker's first start is under way (for less than `within_s`, and it has not
        failed): the device takes a share of the queue, as if idle, so the first device to
        be ready does not take a burst queued at boot whole while the others finish
        starting. A worker that was ready once and died is not coming: its jobs go to the
        devices left."""
        since = self.starting_since
        return not self.ready and not self.gone and since is not None and now - since < within_s

    @property
    def device_id(self) -> str:
        return self.handle.device.id

    @property
    def budget(self) -> int:
        return self.budget_bytes or self.handle.device.total_memory_bytes

    def holds(self, model_path: str) -> bool:
        return any(
            m["key"] == model_path and m["tier"] == "device" for m in self.cache.get("models", [])
        )

    def can_run(self, task: Task) -> bool:
        return (
            not self.gone
            and self.configured_for(task)
            and self.has_model(task.model["path"])
            and all(self.has_model(path) for path in task.needs)
        )

    def configured_for(self, task: Task) -> bool:
        """Its settings let it run the task (whatever models its machine has)."""
        if self.handle.device.id in task.excluded or not self.serves(task.family):
            return False
        caps = self.capabilities
        return "*" in caps or task.family in caps or task.op in caps

    def serves(self, family: str) -> bool:
        return self.families is None or family in self.families

    def has_model(self, model_path: str) -> bool:
        return self.models is None or model_path in self.models

    def fits(self, task: Task, batch: int) -> bool:
        """The model and `batch` items' activations (halved on a 16-bit device: the cost
        estimates are for float32) within the device's budget."""
        item = int(task.item_bytes * self.activation_scale)
        return task.model_bytes + batch * item <= self.budget

    def tasks(self) -> list[Task]:
        """Its tasks without an outcome: the running batch's and those still decoding."""
        return [*self.batch, *(t for f in self.finishing.values() for t in f.tasks)]

    def find(self, job_id: str) -> tuple[Task, int, float] | None:
        """A task of this worker without an outcome, with its batch's size and start."""
        for task in self.batch:
            if task.job_id == job_id:
                return task, self.batch_size, self.batch_started
        for finishing in self.finishing.values():
            for task in finishing.tasks:
                if task.job_id == job_id:
                    return task, finishing.size, finishing.started
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.handle.device.to_dict(),
            "ready": self.ready,
            "gone": self.gone,
            "busy": self.batch_id is not None,
            "active_jobs": [t.job_id for t in self.tasks()],
            **self.handle.describe(),
            "restarts": self.restarts,
            "budget_bytes": self.budget,
            "families": sorted(self.families) if self.families is not None else None,
            "models": len(self.models) if self.models is not None else None,
            "cache": self.cache,
        }
