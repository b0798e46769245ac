"""Sync routes wait for their job; a client that hangs up cancels it."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request

from pixelpool.api.state import AppState
from pixelpool.jobs.spec import JobRecord

DISCONNECT_POLL_S = 0.25


async def wait_or_cancel(state: AppState, request: Request, job_id: str) -> JobRecord:
    """The finished job; cancels it if the client disconnects first."""
    waiter = asyncio.ensure_future(state.jobs.wait(job_id))
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
            if done:
                return waiter.result()
            if await request.is_disconnected():
                with contextlib.suppress(KeyError):
                    await state.jobs.cancel(job_id)
                return await waiter
    finally:
        if not waiter.done():
            waiter.cancel()
