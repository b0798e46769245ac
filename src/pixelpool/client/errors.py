"""Typed errors: the server's native error envelope (`{"error", "detail": [{"field",
"message"}]}`) as exceptions, one class per status family, so callers catch what
they can handle (`RateLimited.retry_after`, `BadRequest.field`) and nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class PixelpoolError(Exception):
    """Any error from the server or the connection to it. `status` is the HTTP status
    (0: no answer); `field` the input the error is about, when the server named one."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        field: str | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.detail = detail or []


class BadRequest(PixelpoolError):
    """The request was refused as it is (400, 413, 422, unknown model 404...)."""


class Unauthorized(PixelpoolError):
    """No key, or a wrong one (401)."""


class Forbidden(PixelpoolError):
    """The key lacks a scope (403)."""


class NotFound(BadRequest):
    """An unknown job, model, artifact or operation (404)."""


class Conflict(PixelpoolError):
    """The job has no result: it failed or was cancelled (409)."""


class Gone(PixelpoolError):
    """The result has expired (410)."""


class RateLimited(PixelpoolError):
    """Too many requests or a full queue (429); retry after `retry_after` seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerBusy(RateLimited):
    """The server cannot take the request now (503: not ready, store locked, no device)."""


class ServerError(PixelpoolError):
    """The server failed (5xx)."""


class ConnectionFailed(PixelpoolError):
    """The server could not be reached, or the connection dropped (status 0)."""


class JobFailed(PixelpoolError):
    """A job ended without a result; `job` is its last view (`job.error` says why)."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} {job.status}: {job.error or 'no reason given'}")
        self.job = job


class JobCancelled(JobFailed):
    """The job was cancelled."""


_BY_STATUS: dict[int, type[PixelpoolError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    429: RateLimited,
    503: ServerBusy,
}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def error_for(status: int, headers: Mapping[str, str], content: bytes) -> PixelpoolError:
    """The exception for an error response, from the native envelope (any other body,
    a proxy's HTML page say, becomes the message as it is)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
        detail = [d for d in body.get("detail") or [] if isinstance(d, dict)]
    else:
        message = content.decode(errors="replace").strip()[:500] or f"HTTP {status}"
        detail = []
    field = detail[0].get("field") if detail else None
    cls = _BY_STATUS.get(status) or (
        ServerError if status >= 500 else BadRequest if status >= 400 else PixelpoolError
    )
    if issubclass(cls, RateLimited):
        return cls(message, status, field, detail, retry_after=_retry_after(headers))
    return cls(message, status, field, detail)
