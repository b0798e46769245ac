"""What the engine schedules: a task per job, and how it reports back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pixelpool.pipelines.base import Result


@dataclass
class Task:
    """One job as the engine sees it. Tasks with equal `group` may share a batch."""

    job_id: str
    family: str
    op: str
    model: dict[str, Any]
    params: dict[str, Any]
    batch_key: tuple[Any, ...] = ()
    priority: int = 100
    owner: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    attempts: int = 0  # runs lost to a dead or hung worker
    model_bytes: int = 0  # cost estimate: the model's weights ...
    item_bytes: int = 0  # ... plus this much per image of a batch
    excluded: set[str] = field(default_factory=set)  # devices it ran out of memory on
    max_batch: int | None = None  # lowered after an out-of-memory error
    cancel_requested: bool = False  # cancelled while running: never run again
    orphaned_since: float | None = None  # queued, and no live machine can run it
    # Other models its params name (LoRAs, ControlNets, ...): path -> the param naming it.
    # Filled where machines differ in the models they have (a cluster); else empty.
    needs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A key read back from the job store is JSON (lists): make it hashable again.
        self.batch_key = frozen(self.batch_key)

    def bytes_for(self, batch: int) -> int:
        return self.model_bytes + batch * self.item_bytes

    @property
    def group(self) -> tuple[Any, ...]:
        # The files' version too: jobs for a model replaced on disk meanwhile run apart.
        return (self.family, self.op, self.model["path"], model_version(self.model),
                self.batch_key)  # fmt: skip


def model_version(model: dict[str, Any]) -> tuple[int, int] | None:
    """A model's files' version (size, mtime) from its wire form; None when not recorded."""
    if model.get("mtime_ns") is None:
        return None
    return (model.get("size_bytes", 0), model["mtime_ns"])


def frozen(value: Any) -> Any:
    """`value` with every list (and dict) turned into a tuple, recursively: hashable."""
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, frozen(v)) for k, v in value.items()))
    return value


class EngineListener(Protocol):
    """The jobs layer implements this; the engine calls it on the event loop."""

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None: ...

    def job_progress(
        self, job_id: str, step: int, total: int, stage: str, preview: Any | None = None
    ) -> None: ...

    def job_finished(self, job_id: str, result: Result, device_id: str, run_s: float) -> None: ...

    def job_failed(self, job_id: str, error: str, kind: str, attempts: int | None = None) -> None:
        """kind: cancelled | error. attempts: the runs lost so far, when that changed."""

    def job_requeued(self, job_id: str, reason: str, attempts: int) -> None:
        """Back in the queue; attempts: the runs lost to a dead or hung worker so far."""
