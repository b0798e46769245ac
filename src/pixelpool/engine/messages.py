"""Messages between the engine (HTTP process) and worker processes, sent over a Pipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pixelpool.pipelines.base import Result, WorkItem

# parent -> worker


@dataclass
class RunBatch:
    batch_id: str
    family: str
    model: dict[str, Any]
    items: list[WorkItem]


@dataclass
class CancelJob:
    job_id: str


@dataclass
class Stop:
    pass


@dataclass
class Admin:
    """Cache control: op is load | unload | pin | unpin."""

    request_id: str
    op: str
    family: str
    model: dict[str, Any]


# worker -> parent


@dataclass
class Ready:
    device: dict[str, Any]
    pid: int
    budget_bytes: int
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdminDone:
    request_id: str
    error: str | None
    cache: dict[str, Any]


@dataclass
class Progress:
    batch_id: str
    job_ids: list[str]
    step: int
    total: int
    stage: str
    previews: list[Any] | None = None  # uint8 RGB arrays aligned with job_ids


@dataclass
class BatchStarted:
    batch_id: str
    model_load_s: float
    source: str = ""  # where the model came from: device (cached), ram, or disk


@dataclass
class ItemResult:
    job_id: str
    result: Result


@dataclass
class ItemFailed:
    job_id: str
    error: str
    kind: str  # "cancelled" | "error" | "oom"


@dataclass
class BatchDenoised:
    """The batch's device-heavy part is done and its decode runs beside the next batch
    (`overlap_decode`): the worker takes another batch now; this one's results and its
    BatchDone follow."""

    batch_id: str


@dataclass
class BatchDone:
    batch_id: str
    run_s: float
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Heartbeat:
    time: float
