"""A1111's error envelope: `{"error", "detail", "body", "errors"}` on every /sdapi path
(and the ControlNet extension's /controlnet ones).

A1111 itself answers FastAPI's `{"detail": [...]}` for validation errors and this
envelope for the rest; here every error (validation 422 included) has this one
shape, with `detail` naming the field (`steps: must be an integer`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pixelpool.api import openapi_docs as docs
from pixelpool.api.errors import ErrorInfo

PREFIX = "/sdapi/v1/"
EXTENSION = "/controlnet/"  # the ControlNet extension's routes


def is_a1111(path: str) -> bool:
    return path.startswith((PREFIX, EXTENSION))


def envelope(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    kind = "RequestValidationError" if info.status == 422 else "HTTPException"
    errors = info.detail or info.message
    return info.status, {"error": kind, "detail": info.message, "body": "", "errors": errors}


class A1111Error(BaseModel):
    """A1111's error envelope, for everything under /sdapi/v1."""

    error: str
    detail: str
    body: str
    errors: str | list[dict[str, Any]]


def responses(*statuses: int) -> docs.Responses:
    return docs.errors_of(A1111Error, statuses)
