"""Who is calling: API keys from `Authorization: Bearer <key>` or `?apikey=<key>`.

With no key configured, everyone is the anonymous principal with every scope
(only allowed on loopback unless --insecure). A key sees only its own jobs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, get_state

ALL_SCOPES = frozenset({"generate", "admin"})


@dataclass(frozen=True)
class Principal:
    name: str | None  # None: auth is off
    scopes: frozenset[str]

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


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("apikey") or None


def key_name(key: str) -> str:
    """A stable, non-secret name for a configured key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def authenticate_token(state: AppState, token: str | None) -> Principal:
    keys = state.settings.auth.keys
    if not keys:
        return ANONYMOUS
    if token is not None:
        for key in keys:
            if hmac.compare_digest(token.encode(), key.encode()):
                return Principal(key_name(key), ALL_SCOPES)
    raise ApiError(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request, state: Annotated[AppState, Depends(get_state)]
) -> Principal:
    return authenticate_token(state, presented_token(request))


Caller = Annotated[Principal, Depends(authenticate)]
