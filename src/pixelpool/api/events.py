"""Live job events: SSE per job (with Last-Event-ID resume) and the `/api/ws` WebSocket.

Both replay a job's logged events after the last id the client saw, then follow
the bus, so a client that reconnects misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from pixelpool.api import openapi_docs as docs
from pixelpool.api import visibility
from pixelpool.api.auth import (
    PRINCIPAL_KEY,
    Caller,
    Principal,
    authenticate_token,
    presented_token,
    ws_subprotocol,
)
from pixelpool.api.errors import ApiError
from pixelpool.api.native import visible_job
from pixelpool.api.state import AppState, State
from pixelpool.jobs.events import TERMINAL, Event
from pixelpool.jobs.spec import JobRecord, JobStatus

router = APIRouter(prefix="/api", tags=["events"])

KEEPALIVE_S = 15.0
STATUS_UPDATE_S = 5.0
WS_UNAUTHORIZED = 4401
CACHE_EVENTS = frozenset({"clip_embeddings", "latent_cache"})


def public(event: Event) -> Event:
    """What a client sees; cache messages exactly in FoxBurrow's shape (no event id)."""
    hidden = ("owner", "id") if event.get("type") in CACHE_EVENTS else ("owner",)
    return {k: v for k, v in event.items() if k not in hidden}


def final_event(record: JobRecord) -> Event:
    """What a client gets for a job that finished before its events were logged here."""
    kind = "completed" if record.status is JobStatus.expired else record.status.value
    return {"type": kind, "job_id": record.id, "status": record.status.value,
            "error": record.error, "id": 0}  # fmt: skip


async def replay(state: AppState, record: JobRecord, after: int | None) -> list[Event]:
    """The job's events after `after` (from memory or the store), ending with a terminal
    event when the job has finished, even if its own terminal event is gone (expired
    from the log, or lost in a crash before it was written)."""
    events = await state.bus.history(record.id, after)
    if record.status.finished and not any(e["type"] in TERMINAL for e in events):
        events.append(final_event(record))
    return events


def _sse(event: Event) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(public(event))}\n\n"


@router.get(
    "/job/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **docs.event_stream("The job's events until it ends"),
        **docs.native(*docs.AUTH, 404, 422),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    state: State,
    caller: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events for one job until it finishes; resumes after Last-Event-ID."""
    record = await visible_job(state, job_id, caller)
    after = _parse_id(last_event_id or request.query_params.get("last_event_id"))
    queue = state.bus.subscribe(lambda e: e.get("job_id") == job_id)

    async def stream() -> AsyncIterator[str]:
        try:
            seen = after or 0
            for event in await replay(state, record, after):
                seen = max(seen, event["id"])
                yield _sse(event)
                if event["type"] in TERMINAL:
                    return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if event["id"] <= seen:
                    continue
                yield _sse(event)
                if event["type"] in TERMINAL:
                    return
        finally:
            state.bus.unsubscribe(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _parse_id(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ApiError(422, "last_event_id: must be an integer", "last_event_id") from exc


class Subscription:
    """What one WebSocket client follows: all of its own jobs, or chosen job ids.

    `sent` holds, per job subscribed by id, the last event id sent: a replay and the
    live events queued meanwhile then reach the client in order, each once. `lock`
    keeps one sender at a time (the replay or the pump)."""

    def __init__(self, caller: Principal, caches: bool = False) -> None:
        self.caller = caller
        self.caches = caches  # wants the caller's jobs' round-trip caches (FoxBurrow)
        self.everything = True
        self.job_ids: set[str] = set()
        self.sent: dict[str, int] = {}
        self.lock = asyncio.Lock()

    def accepts(self, event: Event) -> bool:
        if event.get("type") in CACHE_EVENTS:  # the owner's own connections only
            return event.get("owner") == self.caller.name and self._follows(event)
        if not self.caller.may_see(event.get("owner")):
            return False
        return self._follows(event)

    def _follows(self, event: Event) -> bool:
        return self.everything or event.get("job_id") in self.job_ids


def _compat(event: Event) -> Event | None:
    """The `complete` message FoxBurrow clients wait for."""
    if event["type"] not in TERMINAL:
        return None
    return {"type": "complete", "job_id": event["job_id"], "success": event["type"] == "completed",
            "error": event.get("error"), "gpu_time_s": event.get("gpu_time_s")}  # fmt: skip


async def _status_update(state: AppState, caller: Principal) -> Event:
    """Device state as this caller may see it (another key's job ids are left out)."""
    return {
        "type": "status_update",
        "time": time.time(),
        "queue_depth": state.scheduler.queue_depth(),
        "devices": [
            {"id": d["id"], "busy": d["busy"], "ready": d["ready"], "active_jobs": d["active_jobs"]}
            for d in visibility.devices(state, caller)
        ],
    }


async def _caller(ws: WebSocket, state: AppState) -> Principal | None:
    """The principal AuthGate found; without the gate, checked here. A refusal is an
    accepted socket closed with 4401, which clients can read (a failed handshake is not)."""
    found = ws.scope.get(PRINCIPAL_KEY)
    if found is not None:
        return found
    try:
        return authenticate_token(state, presented_token(ws))
    except ApiError as exc:
        await ws.accept(subprotocol=ws_subprotocol(ws.scope))
        await ws.close(code=WS_UNAUTHORIZED, reason=exc.message)
        return None


@router.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    state: AppState = ws.app.state.pixelpool
    caller = await _caller(ws, state)
    if caller is None:
        return
    await ws.accept(subprotocol=ws_subprotocol(ws.scope))
    sub = Subscription(caller, _truthy(ws.query_params.get("caches")))
    queue = state.bus.subscribe(sub.accepts, large=True)
    sender = asyncio.create_task(_pump(ws, state, sub, queue))
    listening = Listening(state, caller.name, sub)
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            try:
                message = json.loads(frame.get("text") or frame.get("bytes") or b"")
            except ValueError:
                await _reply(ws, sub, {"type": "error", "error": "messages must be JSON objects"})
                continue
            if isinstance(message, dict) and isinstance(message.get("caches"), bool):
                sub.caches = message["caches"]  # on a subscribe message
                listening.update()
            await _handle(ws, state, sub, message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        listening.close()
        sender.cancel()
        state.bus.unsubscribe(queue)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class Listening:
    """Counts, per owner, the open connections that want caches (`?caches=1`, or a
    subscribe message with `"caches": true`): jobs an owner submits while it has one
    carry `emit_caches`."""

    def __init__(self, state: AppState, owner: str | None, sub: Subscription) -> None:
        self.state, self.owner, self.sub = state, owner, sub
        self.counted = False
        self.update()

    def update(self) -> None:
        listeners = self.state.cache_listeners
        if self.sub.caches and not self.counted:
            listeners[self.owner] += 1
        elif not self.sub.caches and self.counted:
            listeners[self.owner] -= 1
            if listeners[self.owner] <= 0:
                del listeners[self.owner]
        self.counted = self.sub.caches

    def close(self) -> None:
        self.sub.caches = False
        self.update()


async def _reply(ws: WebSocket, sub: Subscription, message: Event) -> None:
    async with sub.lock:  # never interleaved with the pump's sends
        await ws.send_json(message)


async def _pump(
    ws: WebSocket, state: AppState, sub: Subscription, queue: asyncio.Queue[Event]
) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        next_status = time.monotonic() + STATUS_UPDATE_S
        while True:
            timeout = max(0.0, next_status - time.monotonic())
            try:
                event = await asyncio.wait_for(queue.get(), timeout=timeout)
            except TimeoutError:
                async with sub.lock:
                    await ws.send_json(await _status_update(state, sub.caller))
                next_status = time.monotonic() + STATUS_UPDATE_S
                continue
            async with sub.lock:
                job_id = event.get("job_id")
                if job_id in sub.sent:
                    if event["id"] <= sub.sent[job_id]:
                        continue  # the replay sent it already
                    sub.sent[job_id] = event["id"]
                await _send(ws, event)


async def _send(ws: WebSocket, event: Event) -> None:
    await ws.send_json(public(event))
    if (compat := _compat(event)) is not None:
        await ws.send_json(compat)


def _job_ids(message: dict[str, Any]) -> list[str] | None:
    """`job_ids` as a list of strings, or None when it is something else."""
    ids = message.get("job_ids", [])
    if not isinstance(ids, list) or not all(isinstance(j, str | int) for j in ids):
        return None
    return [str(j) for j in ids]


def _problem(message: Any) -> str | None:
    """What is wrong with a client message, if anything (answered, the socket stays open)."""
    if not isinstance(message, dict):
        return "messages must be JSON objects"
    if message.get("type") in ("subscribe", "unsubscribe") and _job_ids(message) is None:
        return "job_ids: must be a list of job ids"
    after = message.get("last_event_id")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
        return "last_event_id: must be an integer"
    return None


async def _handle(ws: WebSocket, state: AppState, sub: Subscription, message: Any) -> None:
    problem = _problem(message)
    if problem is not None:
        await _reply(ws, sub, {"type": "error", "error": problem})
        return
    kind = message.get("type")
    if kind == "subscribe":
        if message.get("all"):
            sub.everything = True
            return
        ids = _job_ids(message) or []
        sub.everything = False
        after = message.get("last_event_id")
        for job_id in ids:
            record = await state.jobs.get(job_id)
            if record is None or not sub.caller.may_see(record.owner):
                await _reply(ws, sub, {"type": "error", "job_id": job_id, "error": "job not found"})
                continue
            start = after
            async with sub.lock:  # live events wait in the queue meanwhile
                sub.job_ids.add(job_id)
                last = start or 0
                for event in await replay(state, record, start):
                    await _send(ws, event)
                    last = max(last, event["id"])
                sub.sent[job_id] = last
    elif kind == "unsubscribe":
        for job_id in _job_ids(message) or []:
            sub.job_ids.discard(job_id)
            sub.sent.pop(job_id, None)
    elif kind == "ping":
        await _reply(ws, sub, {"type": "pong"})
    else:
        await _reply(ws, sub, {"type": "error", "error": f"unknown message type {kind!r}"})
