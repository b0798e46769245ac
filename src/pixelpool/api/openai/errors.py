"""OpenAI's error envelope for everything under /v1, so the SDK raises the right class.

`{"error": {"message", "type", "param", "code"}}`; invalid values are 400 (the SDK's
BadRequestError), never FastAPI's 422.
"""

from __future__ import annotations

from typing import Any

from pixelpool.api.errors import ErrorInfo

_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "insufficient_permissions"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    410: ("invalid_request_error", "expired"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
}


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def envelope(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The body OpenAI sends for an error with this (already mapped) status."""
    kind, code = _KINDS.get(
        status, ("server_error", None) if status >= 500 else ("api_error", None)
    )
    if status == 404 and param in ("model", "model_id"):
        code = "model_not_found"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    status = 400 if info.status == 422 else info.status
    return status, envelope(status, info.message, info.field)
