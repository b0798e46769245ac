"""Errors as clients read them: `{"error": "...", "detail": [...]}` on the native dialect.

Bad input never reaches a worker and never becomes a 500: every validation
failure names the field it is about.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


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


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _body(message: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = detail
    return body


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(_body("malformed JSON body"), status_code=400)
    detail = [{"field": _loc(e["loc"]), "message": e["msg"]} for e in errors]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    return JSONResponse(_body(message, detail), status_code=422)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    detail = [{"field": exc.field, "message": exc.detail}] if exc.field else None
    return JSONResponse(_body(exc.message, detail), status_code=exc.status, headers=exc.headers)


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(_body("internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
