"""Key management over HTTP (admin scope): the same store as `pixelpool keys`.

Only on a server that already has auth: the first key comes from the command
line (`pixelpool keys create`), so an anonymous client of a keyless server can
neither mint an admin key nor lock everyone else out by turning auth on.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from pixelpool.api import openapi_docs as docs
from pixelpool.api.auth import Principal, require_admin
from pixelpool.api.errors import ApiError
from pixelpool.api.state import State
from pixelpool.jobs.keys import DuplicateKeyName, KeyRecord, KeyStoreError

router = APIRouter(prefix="/api/keys", tags=["keys"])
NO_AUTH = (
    "key management over HTTP needs auth: this server has no keys; create the first "
    "one with `pixelpool keys create --name NAME --scope admin`"
)


async def key_admin(caller: Annotated[Principal, Depends(require_admin)]) -> Principal:
    """An admin that authenticated: never the anonymous principal of a keyless server."""
    if caller.name is None:
        raise ApiError(403, NO_AUTH)
    return caller


Admin = Annotated[Principal, Depends(key_admin)]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    scopes: list[str] = Field(["generate"], description="generate, admin (admin includes generate)")
    rate_limit_per_minute: float | None = Field(None, gt=0, description="default: the config's")


def _view(record: KeyRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "scopes": sorted(record.scopes),
        "rate_limit_per_minute": record.rate_per_min,
        "created": record.created,
        "revoked": record.revoked,
        "hash_prefix": record.hint,
    }


@router.get("", responses=docs.native(*docs.SCOPED))
async def list_keys(state: State, caller: Admin) -> list[dict[str, Any]]:
    return [_view(r) for r in await asyncio.to_thread(state.keys.all)]


@router.post(
    "",
    status_code=201,
    responses=docs.native(400, *docs.SCOPED, 409, 413, 422),
    openapi_extra=docs.example({"name": "ci-bot", "scopes": ["generate"]}),
)
async def create_key(req: CreateKey, state: State, caller: Admin) -> dict[str, Any]:
    """The new key is in `key`, this once; only its hash is stored."""
    try:
        token, record = await asyncio.to_thread(
            state.keys.create, req.name, req.scopes, req.rate_limit_per_minute
        )
    except KeyStoreError as exc:
        status = 409 if isinstance(exc, DuplicateKeyName) else 422
        raise ApiError(status, str(exc), "name") from exc
    return {**_view(record), "key": token}


@router.delete("/{name}", responses=docs.native(*docs.SCOPED, 404))
async def revoke_key(name: str, state: State, caller: Admin) -> dict[str, str]:
    if not await asyncio.to_thread(state.keys.revoke, name):
        raise ApiError(404, f"no active key named {name!r}", "name")
    return {"revoked": name}
