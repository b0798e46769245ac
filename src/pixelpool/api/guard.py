"""AuthGate: the credential check for every HTTP request and WebSocket, before any route.

As an ASGI middleware it runs before FastAPI reads or parses a body, so an
unauthenticated upload is refused without being read, and a route cannot be
added without auth: only `PUBLIC_PATHS` are open. A refused HTTP request gets
the dialect's own 401/403/429 envelope (the app's ApiError handler shapes it); a
refused WebSocket is accepted and closed with 4000 + status (4401, 4429), which
browsers can read, unlike a failed handshake.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from pixelpool.api.auth import (
    ADMIN_PATHS,
    ANONYMOUS,
    PRINCIPAL_KEY,
    PUBLIC_PATHS,
    Principal,
    auth_enabled,
    authenticate_token,
    enforce_rate_limit,
    metrics_reader,
    presented_token,
    ws_subprotocol,
)
from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, current_owner

# Matched against the request path here, before routing, with Starlette's own compiler.
_ADMIN_PATTERNS = [compile_path(template)[0] for template in sorted(ADMIN_PATHS)]


def admin_only(path: str) -> bool:
    """Whether `path` is one of the admin routes (any method)."""
    return any(pattern.match(path) for pattern in _ADMIN_PATTERNS)


def _optional(state: AppState, token: str | None) -> Principal | None:
    """On a public path a credential is optional: a valid one personalises the answer
    (e.g. the caller's default model on /health), an invalid one is ignored."""
    if not auth_enabled(state):
        return ANONYMOUS
    if not token:
        return None
    try:
        return authenticate_token(state, token)
    except ApiError:
        return None


def check(state: AppState, scope: Scope) -> Principal | None:
    """The caller of a request, or ApiError (401 no or bad credential, 429, 403 admin)."""
    token = presented_token(HTTPConnection(scope))
    if scope["path"] in PUBLIC_PATHS:
        return _optional(state, token)
    reader = metrics_reader(state, scope["path"], token)
    if reader is not None:
        return reader
    principal = authenticate_token(state, token)
    enforce_rate_limit(state, principal)
    if admin_only(scope["path"]):
        principal.require("admin")
    return principal


class AuthGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        state: AppState | None = getattr(scope["app"].state, "pixelpool", None)
        try:
            if state is None:  # not started: fail closed
                raise ApiError(503, "the server is starting", headers={"Retry-After": "1"})
            principal = check(state, scope)
        except ApiError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        scope[PRINCIPAL_KEY] = principal
        reset = current_owner.set(principal.owner if principal is not None else None)
        try:
            await self.app(scope, receive, send)
        finally:
            current_owner.reset(reset)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept", "subprotocol": ws_subprotocol(scope)})
            await send({"type": "websocket.close", "code": 4000 + exc.status,
                        "reason": exc.message[:120]})  # fmt: skip
            return
        handler = scope["app"].exception_handlers[ApiError]
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)
