"""JobSpec and the job record: what was asked, and where it stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.queued, JobStatus.running)


class JobSpec(BaseModel):
    """A request turned into an operation on a model with validated params (any dialect)."""

    op: str
    family: str
    model: dict[str, Any]  # the registry entry's wire form
    params: dict[str, Any]
    batch_key: list[Any] = []
    priority: int = Field(100, ge=1, le=100)
    output_format: str = "png"
    output_quality: int = Field(90, ge=0, le=100)  # JPEG / WebP


@dataclass
class JobRecord:
    id: str
    spec: JobSpec
    owner: str | None
    status: JobStatus
    created: float
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    device: str | None = None
    batch_size: int | None = None
    attempts: int = 0
    result: dict[str, Any] = field(default_factory=dict)  # artifacts, seeds, info, timings
    expires: float | None = None
    idempotency_key: str | None = None
