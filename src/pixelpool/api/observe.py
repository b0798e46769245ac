"""What operators watch: `GET /metrics`, and the middleware that counts and describes
every HTTP request.

The middleware is the outermost layer (it also sees the 401s and 429s the
credential check answers) and stays cheap: a timer, a wrapped `send`, and one
counter and one histogram update per request. It labels requests by route
*template* (`/api/job/{job_id}`), never the raw path; a request no route matched
is labelled `<unmatched>`. It also opens the request's `RequestInfo`, which
uvicorn's access log line reads (job ids, key name, route, duration).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import fastapi.routing
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelpool.api import openapi_docs as docs
from pixelpool.api.auth import METRICS_READER, PRINCIPAL_KEY, Principal, authenticate
from pixelpool.api.metrics import Metrics
from pixelpool.api.state import AppState, get_state
from pixelpool.logs import RequestInfo, request_info

UNMATCHED = "<unmatched>"

router = APIRouter(tags=["admin"])


def _patterns(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Every route's template and its regex, built once per app (routers flattened)."""
    cached = getattr(app.state, "route_patterns", None)
    if cached is None:
        flatten = getattr(fastapi.routing, "iter_route_contexts", list)
        templates = [getattr(route, "path", None) for route in flatten(app.routes)]
        cached = [(compile_path(t)[0], t) for t in templates if isinstance(t, str)]
        app.state.route_patterns = cached
    return cached


def _template(scope: Scope) -> str:
    """The route template that served the request, or (refused before routing) the first
    whose pattern matches its path."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    if app is None:
        return UNMATCHED
    return next((t for pattern, t in _patterns(app) if pattern.match(scope["path"])), UNMATCHED)


class RequestObserver:
    """Counts each HTTP request by method, route and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = RequestInfo()
        status = 500  # unless a response starts: the app raised

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _describe(scope, info, started)
            await send(message)

        reset = request_info.set(info)
        try:
            await self.app(scope, receive, observed)
        finally:
            request_info.reset(reset)
            route = info.route or _template(scope)
            self.metrics.http_request(scope["method"], route, status, time.perf_counter() - started)


def _describe(scope: Scope, info: RequestInfo, started: float) -> None:
    """Fill the access log's fields, just before uvicorn writes the line."""
    info.route = _template(scope)
    principal = scope.get(PRINCIPAL_KEY)
    info.key = getattr(principal, "name", None)
    job_id = scope.get("path_params", {}).get("job_id")
    if isinstance(job_id, str) and job_id not in info.job_ids:
        info.job_ids.insert(0, job_id)
    info.duration_ms = round((time.perf_counter() - started) * 1000, 3)


async def _reader(caller: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if caller is not METRICS_READER:
        caller.require("admin")
    return caller


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format",
              "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **docs.native(*docs.SCOPED),
    },
)  # fmt: skip
async def metrics(
    state: Annotated[AppState, Depends(get_state)],
    _: Annotated[Principal, Depends(_reader)],
) -> Response:
    """The server's metrics in Prometheus's text format (admin scope, or the bearer
    token `server.metrics_token`). See docs/operations.md for each metric."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
