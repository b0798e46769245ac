"""Errors as clients read them: `{"error": "...", "detail": [...]}` on the native dialect.

Bad input never reaches a worker and never becomes a 500: every validation
failure names the field it is about. Other dialects register their own error
shape for their paths with `add_error_format` (e.g. OpenAI's envelope under /v1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelpool.jobs.diskspace import MESSAGE as STORAGE_FULL
from pixelpool.jobs.diskspace import RETRY_AFTER_S, is_disk_full

log = logging.getLogger(__name__)
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")
_SURROGATES = re.compile("[\ud800-\udfff]")


class ApiError(Exception):
    """An error with an HTTP status and, when about one input, the field it names."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.detail = message.removeprefix(f"{field}: ") if field else message


def field_error(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, f"{field}: {message}", field)


@dataclass(frozen=True)
class ErrorInfo:
    """One error, before a dialect shapes it."""

    status: int
    message: str
    field: str | None = None
    detail: list[dict[str, Any]] | None = None


ErrorFormat = Callable[[ErrorInfo], tuple[int, dict[str, Any]]]  # -> (status, body)


def add_error_format(app: FastAPI, matches: Callable[[str], bool], fmt: ErrorFormat) -> None:
    """Shape errors on paths for which `matches(path)` holds with `fmt`; first match wins."""
    app.state.error_formats = [*getattr(app.state, "error_formats", []), (matches, fmt)]


def clean_text(text: str) -> str:
    """Human text only: no Python object reprs, and encodable (echoed input may not be)."""
    return _SURROGATES.sub("\ufffd", _OBJECT_REPR.sub("", text))


def render_error(
    app: Any, path: str, info: ErrorInfo, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error in the envelope of the dialect that serves `path` (native by default)."""
    detail = [{k: clean_text(str(v)) for k, v in d.items()} for d in info.detail or []] or None
    info = ErrorInfo(info.status, clean_text(info.message), info.field, detail)
    for matches, fmt in getattr(app.state, "error_formats", []):
        if matches(path):
            status, body = fmt(info)
            return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse(_body(info.message, info.detail), status_code=info.status, headers=headers)


def _respond(
    request: Request, info: ErrorInfo, headers: dict[str, str] | None = None
) -> JSONResponse:
    return render_error(request.app, request.url.path, info, headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _msg(error: dict[str, Any]) -> str:
    """pydantic's message, without its "Value error, " prefix for our own validators."""
    return str(error["msg"]).removeprefix("Value error, ")


def _body(message: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = detail
    return body


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _respond(request, ErrorInfo(400, "malformed JSON body"))
    detail = [{"field": _loc(e["loc"]), "message": _msg(e)} for e in errors]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    field = detail[0]["field"] if detail else None
    return _respond(request, ErrorInfo(422, message, field, detail))


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    detail = [{"field": exc.field, "message": exc.detail}] if exc.field else None
    info = ErrorInfo(exc.status, exc.message, exc.field, detail)
    return _respond(request, info, exc.headers)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _respond(request, ErrorInfo(exc.status_code, str(exc.detail)), exc.headers)


async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
    """A safety net: input nested so deeply that parsing or validating it recursed too far."""
    return _respond(request, ErrorInfo(400, "body: input is nested too deeply", "body"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _unexpected_response(request, exc)


def _unexpected_response(request: Request, exc: BaseException) -> JSONResponse:
    """A 500, except for a full disk: the server's state, not a bug, so a 503 that says
    so (one log line, no trace), and the client retries later."""
    method, path = request.method, request.url.path
    if is_disk_full(exc):
        log.error("%s on %s %s: %s", STORAGE_FULL, method, path, exc)
        info = ErrorInfo(503, f"{STORAGE_FULL}; retry later")
        return _respond(request, info, {"Retry-After": str(RETRY_AFTER_S)})
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return _respond(request, ErrorInfo(500, "internal server error"))


class CatchAllMiddleware:
    """An unexpected exception becomes a 500 in the dialect's envelope, and is not re-raised.

    Starlette's own handler for `Exception` sends the 500 and then re-raises, and the
    server then closes the connection: a keep-alive client saw a reset. Once a response
    has started (a stream), the exception goes on: its body cannot be replaced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            await _unexpected_response(Request(scope), exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(CatchAllMiddleware)
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(RecursionError, _too_deep)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
