"""Admin: model cache control per device (admin scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError
from pixelpool.api.state import State

router = APIRouter(prefix="/api/models", tags=["admin"])

CACHE_OPS = ("load", "unload", "pin", "unpin")


class CacheRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    device: str | None = None  # default: every device


@router.post(
    "/{op}",
    responses=docs.native(400, *docs.SCOPED, 404, 409, 413, 422),
    openapi_extra=docs.example(docs.MODEL),
)
async def cache_op(op: str, req: CacheRequest, state: State, caller: Caller) -> dict[str, Any]:
    """Load a model into a device's cache, drop it, or pin it there (never evicted)."""
    caller.require("admin")
    if op not in CACHE_OPS:
        raise ApiError(
            404, f"op: unknown cache operation {op!r}; valid: {', '.join(CACHE_OPS)}", "op"
        )
    entry = ops.resolve_model(state, req.model, family=None)
    try:
        reports = await state.scheduler.admin(req.device, op, entry.family, entry.to_wire())
    except KeyError as exc:
        raise ApiError(404, f"device: no such device {req.device!r}", "device") from exc
    failed = [r for r in reports if r["error"]]
    if failed:
        detail = "; ".join(f"{r['device']}: {r['error']}" for r in failed)
        raise ApiError(409, f"{op} {entry.name} failed on {detail}")
    key = entry.to_wire()["path"]
    devices = []
    for report in reports:
        where = [m for m in report["cache"].get("models", []) if m["key"] == key]
        devices.append({"device": report["device"], "tier": where[0]["tier"] if where else None,
                        "pinned": bool(where and where[0]["pinned"])})  # fmt: skip
    return {"model": entry.name, "op": op, "devices": devices}
