"""What the client returns: small frozen dataclasses over the server's JSON, each
keeping the whole body in `raw` so fields the server adds later are not lost."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

FINISHED = frozenset({"completed", "failed", "cancelled", "expired"})


@dataclass(frozen=True)
class ImageResult:
    """An operation's binary result: an image (or latents) and where it came from."""

    data: bytes
    media_type: str
    job_id: str | None = None
    seed: int | None = None

    def save(self, path: Any) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


@dataclass(frozen=True)
class Job:
    """A job's view (`GET /api/job/{id}`)."""

    id: str
    status: str
    op: str | None = None
    model: str | None = None
    step: int = 0
    total: int = 0
    progress: float = 0.0
    seeds: list[Any] = field(default_factory=list)
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        return cls(
            id=body["job_id"], status=body["status"], op=body.get("op"),
            model=body.get("model"), step=body.get("denoise_step") or 0,
            total=body.get("denoise_total") or 0, progress=body.get("progress") or 0.0,
            seeds=list(body.get("seeds") or []), error=body.get("error"), raw=body,
        )  # fmt: skip


@dataclass(frozen=True)
class JobEvent:
    """One of a job's events (`queued`, `started`, `progress`, `preview`, `completed`,
    `failed`, `cancelled`...); `id` resumes the stream after it."""

    type: str
    job_id: str
    id: int | None = None
    status: str | None = None
    step: int | None = None
    total: int | None = None
    stage: str | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return self.type in ("completed", "failed", "cancelled")

    @property
    def preview(self) -> bytes | None:
        """A preview event's image (PNG bytes)."""
        image = self.raw.get("image")
        return base64.b64decode(image) if self.type == "preview" and image else None

    @classmethod
    def from_json(cls, body: dict[str, Any], event_id: int | None = None) -> JobEvent:
        return cls(
            type=body.get("type", ""), job_id=body.get("job_id", ""),
            id=body.get("id", event_id), status=body.get("status"), step=body.get("step"),
            total=body.get("total"), stage=body.get("stage"), error=body.get("error"),
            raw=body,
        )  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """What a `wait` progress callback gets: the step, the total, the stage, and the
    latest preview image (PNG bytes) when the job sends previews."""

    step: int
    total: int
    stage: str | None = None
    preview: bytes | None = None
    event: JobEvent | None = None


@dataclass(frozen=True)
class Listed:
    """One entry of a list route (`/api/model-list`, `/api/lora-list`, ...)."""

    name: str
    family: str | None = None
    architecture: str | None = None
    size_bytes: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Listed:
        return cls(
            name=body["name"], family=body.get("family"), architecture=body.get("architecture"),
            size_bytes=body.get("size_bytes"), raw=body,
        )  # fmt: skip
