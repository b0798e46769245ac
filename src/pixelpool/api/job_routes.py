"""A job's two routes: `POST /api/<path>` waits and returns the result, and
`POST /api/enqueue/<path>` returns the job id at once (honouring `Idempotency-Key`).

Every native operation beyond /api/generate (diffusion ops, one-image utilities)
registers through `add_job_routes`, so the pair behaves the same everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller
from pixelpool.api.native import result_response
from pixelpool.api.state import AppState, State
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.jobs.spec import JobSpec

Builder = Callable[[Request, AppState, str | None], Awaitable[JobSpec]]


def add_job_routes(
    router: APIRouter,
    path: str,
    build: Builder,
    summary: str,
    body: dict[str, Any],
    result: docs.Responses,
) -> None:
    """`body` is the request's OpenAPI description (openapi_extra); `result` the sync 200."""

    async def run_sync(request: Request, state: State, caller: Caller) -> Any:
        caller.require("generate")
        record = await ops.submit(state, await build(request, state, caller.owner), caller.owner)
        return await result_response(state, await wait_or_cancel(state, request, record.id))

    async def run_async(
        request: Request,
        state: State,
        caller: Caller,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, str]:
        caller.require("generate")
        spec = await build(request, state, caller.owner)
        record = await ops.submit(state, spec, caller.owner, idempotency_key)
        return {"job_id": record.id}

    sync = {**result, **docs.native(*docs.SYNC)}
    router.add_api_route(f"/{path}", run_sync, methods=["POST"], summary=summary,
                         responses=sync, openapi_extra=body)  # fmt: skip
    router.add_api_route(f"/enqueue/{path}", run_async, methods=["POST"], summary=summary,
                         responses=docs.native(*docs.SUBMIT), openapi_extra=body)  # fmt: skip
