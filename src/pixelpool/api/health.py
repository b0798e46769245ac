"""Liveness and readiness: answered from memory, in milliseconds, whatever the load."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pixelpool.api.native import State

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    return {"status": "ok", "uptime_s": round(time.time() - state.started, 1)}


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    ok = state.scheduler.ready
    body = {"ready": ok, "workers": sum(s.ready for s in state.scheduler.slots)}
    return JSONResponse(body, status_code=200 if ok else 503)
