"""Who is calling: `Authorization: Bearer <key or JWT>` or `?apikey=<key>`; a WebSocket
may also offer its key as the subprotocol `bearer.<key>` beside `pixelpool` (browsers
cannot set headers on one, and a query string ends up in proxy logs).

Three kinds of credential, tried in this order:
- keys from the config file (`auth.keys`): every scope;
- keys made with `pixelpool keys create` (stored hashed; named, scoped, revocable
  while the server runs);
- HS256 JWTs signed with `auth.jwt_secret`, with `sub`, `exp` and `scopes` claims.

With none of these configured, everyone is the anonymous principal with every
scope (only allowed on loopback unless --insecure). A key sees only its own jobs.
Every authenticated request also takes a token from its key's rate-limit bucket.

The check runs in `guard.AuthGate`, an ASGI middleware, before any route or body
parser: every path but `PUBLIC_PATHS` needs a credential, and `ADMIN_PATHS` the
admin scope. The routes' `Caller` dependency then reads the principal it found.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, get_state
from pixelpool.jobs.keys import SCOPES

ALL_SCOPES = frozenset(SCOPES)
JWT_ALGORITHMS = ["HS256"]
JWT_DEFAULT_SCOPES = ("generate",)
PRINCIPAL_KEY = "pixelpool.principal"  # where AuthGate leaves the principal in the ASGI scope
WS_PROTOCOL = "pixelpool"  # the WebSocket subprotocol accepted beside `bearer.<key>`
WS_KEY_PREFIX = "bearer."

# Open without a credential. Liveness and readiness (/health also carries the
# self-hosted client's startup probe), the inference dialect's service info and
# health (`/`, `/v1`, `/v1/health`: clients probe them before any key is set up),
# the API's description (`/docs`, `/redoc`, `/openapi.json`: the shape of the
# API, no data), and the status page's script and style (static; `/` is the page).
# Everything else, unknown paths included, needs a credential.
PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/", "/v1", "/v1/health", "/docs", "/docs/oauth2-redirect",
     "/redoc", "/openapi.json", "/ui/status.js", "/ui/status.css"}
)  # fmt: skip
# Route templates that need the admin scope (every method): server-wide settings.
ADMIN_PATHS = frozenset(
    {"/api/rescan-models", "/api/rescan-loras", "/api/models/{op}", "/api/keys",
     "/api/keys/{name}", "/models/load", "/models/unload", "/models/unload-all",
     "/metrics"}
)  # fmt: skip
METRICS_PATH = "/metrics"  # also open to `server.metrics_token`, which opens nothing else


@dataclass(frozen=True)
class Principal:
    name: str | None  # None: auth is off
    scopes: frozenset[str]
    rate_per_min: float | None = None  # None: the configured default

    @property
    def owner(self) -> str | None:
        """The owner recorded on jobs and artifacts."""
        return self.name

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ApiError(403, f"this key lacks the {scope!r} scope")

    def may_see(self, owner: str | None) -> bool:
        return self.name is None or owner == self.name


ANONYMOUS = Principal(None, ALL_SCOPES)
METRICS_READER = Principal("metrics-token", frozenset())  # may read /metrics, nothing else


def presented_token(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for offered in request.scope.get("subprotocols") or ():  # WebSockets only
        if offered.startswith(WS_KEY_PREFIX) and len(offered) > len(WS_KEY_PREFIX):
            return offered[len(WS_KEY_PREFIX) :]
    return request.query_params.get("apikey") or None


def ws_subprotocol(scope: Any) -> str | None:
    """The subprotocol to accept: `pixelpool` when the client offered it (a browser that
    offers subprotocols drops a connection accepted without one), never the key."""
    return WS_PROTOCOL if WS_PROTOCOL in (scope.get("subprotocols") or ()) else None


def key_name(key: str) -> str:
    """A stable, non-secret name for a key from the config file."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def auth_enabled(state: AppState) -> bool:
    auth = state.settings.auth
    return bool(auth.keys or auth.jwt_secret) or state.keys.has_keys()


def _unauthorized(message: str = "missing or invalid API key") -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def _jwt_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """`scopes` (a list) or `scope` (space-separated, RFC 8693); unknown ones are ignored."""
    raw = claims.get("scopes", claims.get("scope", JWT_DEFAULT_SCOPES))
    if isinstance(raw, str):
        raw = raw.split()
    if not isinstance(raw, list | tuple) or not all(isinstance(s, str) for s in raw):
        raise _unauthorized("invalid token: scopes must be a list of strings")
    scopes = {s for s in raw if s in ALL_SCOPES}
    if "admin" in scopes:
        scopes.add("generate")
    return frozenset(scopes)


def _jwt_problem(exc: jwt.InvalidTokenError) -> str:
    """A fixed message per failure: never the token, its header or the secret."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token has expired"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"invalid token: the {exc.claim!r} claim is required"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid token: signature verification failed"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"invalid token: only {', '.join(JWT_ALGORITHMS)} is accepted"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "invalid token: not valid yet"
    return "invalid token: malformed"


def _from_jwt(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=JWT_ALGORITHMS, options={"require": ["exp", "sub"]}
        )
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(_jwt_problem(exc)) from None
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise _unauthorized("invalid token: sub must be a non-empty string")
    return Principal(f"jwt:{claims['sub']}", _jwt_scopes(claims))


def _config_key(state: AppState, token: str) -> str | None:
    """The config key equal to `token`, comparing SHA-256 digests in constant time
    (equal lengths, no early exit), so timing reveals neither a key nor its length."""
    presented = hashlib.sha256(token.encode()).digest()
    found = None
    for key in state.settings.auth.keys:
        if hmac.compare_digest(presented, hashlib.sha256(key.encode()).digest()):
            found = key
    return found


def authenticate_token(state: AppState, token: str | None) -> Principal:
    """The principal for a presented token (also used for the WebSocket handshake)."""
    if not auth_enabled(state):
        return ANONYMOUS
    if not token:
        raise _unauthorized()
    key = _config_key(state, token)
    if key is not None:
        return Principal(key_name(key), ALL_SCOPES)
    stored = state.keys.lookup(token)
    if stored is not None:
        return Principal(stored.name, stored.scopes, stored.rate_per_min)
    secret = state.settings.auth.jwt_secret
    if secret and token.count(".") == 2:
        return _from_jwt(secret, token)
    raise _unauthorized()


def metrics_reader(state: AppState, path: str, token: str | None) -> Principal | None:
    """METRICS_READER when `path` is /metrics and `token` is `server.metrics_token` (compared
    in constant time); else None, and the usual admin check applies. With a metrics token
    set, /metrics needs it (or an admin credential) even when auth is otherwise off."""
    expected = state.settings.server.metrics_token
    if path != METRICS_PATH or not expected:
        return None
    presented = hashlib.sha256((token or "").encode()).digest()
    if hmac.compare_digest(presented, hashlib.sha256(expected.encode()).digest()):
        return METRICS_READER
    if not auth_enabled(state):
        raise _unauthorized("missing or invalid metrics token")
    return None


def enforce_rate_limit(state: AppState, principal: Principal) -> None:
    """429 with Retry-After once the principal's bucket is empty (anonymous: no limit)."""
    if principal.name is None:
        return
    auth = state.settings.auth
    per_min = (
        auth.rate_limit_per_minute if principal.rate_per_min is None else principal.rate_per_min
    )
    wait = state.limiter.take(principal.name, per_min, auth.rate_limit_burst)
    if wait > 0:
        state.metrics.refused(principal.name)
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            f"rate limit reached: {per_min:g} requests per minute; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )


async def authenticate(
    request: Request, state: Annotated[AppState, Depends(get_state)]
) -> Principal:
    """The principal AuthGate found (checked and rate-limited there, before the body)."""
    principal = request.scope.get(PRINCIPAL_KEY)
    if principal is not None:
        return principal
    principal = authenticate_token(state, presented_token(request))  # no gate: check here
    enforce_rate_limit(state, principal)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


async def require_admin(caller: Caller) -> Principal:
    caller.require("admin")
    return caller


Admin = Annotated[Principal, Depends(require_admin)]
