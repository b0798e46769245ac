"""`stream: true`: OpenAI-shaped server-sent events from the job's step previews.

The job runs with `preview_every` set so that `partial_images` previews arrive
spread over the steps; each becomes an `image_generation.partial_image` event
(scaled to the output size), then the result an `image_generation.completed`
event. With `background: "transparent"` the result goes through a bgremove job
first (the partial images are previews of the opaque image). A client that hangs
up cancels the job(s).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from pixelpool.api import ops
from pixelpool.api.errors import ApiError
from pixelpool.api.openai.encoding import preview_b64
from pixelpool.api.openai.errors import envelope
from pixelpool.api.openai.plan import Plan, final_bytes
from pixelpool.api.openai.transparent import read_cutout, submit_cutout
from pixelpool.api.runs import b64, cancel_all, read_output
from pixelpool.api.state import AppState
from pixelpool.jobs.events import TERMINAL, Event
from pixelpool.jobs.spec import JobRecord

KEEPALIVE_S = 15.0
PREVIEW_QUALITY = 80
USAGE = {  # pixelpool does not meter tokens
    "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
}  # fmt: skip


def preview_every(steps: int, partial_images: int) -> int:
    """Steps between previews so that `partial_images` of them come before the last step."""
    return max(1, math.ceil(steps / (partial_images + 1))) if partial_images else 0


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class _Events:
    """Builds the event payloads for one streamed generation."""

    def __init__(self, plan: Plan, prefix: str) -> None:
        self.plan = plan
        self.prefix = prefix

    def _base(self, kind: str, image: str) -> dict[str, Any]:
        return {
            "type": f"{self.prefix}.{kind}", "b64_json": image, "created_at": int(time.time()),
            "size": self.plan.size, "quality": self.plan.quality,
            "background": self.plan.background, "output_format": self.plan.output_format,
        }  # fmt: skip

    async def partial(self, preview: str, index: int) -> str:
        plan = self.plan
        quality = PREVIEW_QUALITY if plan.compression is None else plan.compression
        image = await asyncio.to_thread(
            preview_b64, preview, plan.width, plan.height, plan.output_format, quality
        )
        return _sse(f"{self.prefix}.partial_image", {
            **self._base("partial_image", image), "partial_image_index": index,
        })  # fmt: skip

    def completed(self, data: bytes, seed: int) -> str:
        payload = {**self._base("completed", b64(data)), "usage": USAGE, "seed": seed}
        return _sse(f"{self.prefix}.completed", payload)


def _error(exc: ApiError) -> str:
    return _sse("error", {"type": "error", **envelope(exc.status, exc.message, exc.field)})


async def stream_generation(
    state: AppState,
    plan: Plan,
    partial_images: int,
    owner: str | None,
    prefix: str = "image_generation",
) -> StreamingResponse:
    """Submit the single job of `plan` and answer with its events as they happen."""
    (spec,) = plan.specs
    ops.enable_previews(state, spec, preview_every(spec.params["steps"], partial_images))
    record = await ops.submit(state, spec, owner)
    events = _Events(plan, prefix)
    running = [record]  # what a client that hangs up cancels

    async def body() -> AsyncIterator[str]:
        queue = state.bus.subscribe(lambda e: e.get("job_id") == record.id)
        finished = False
        try:
            sent = 0
            async for event in _follow(state, queue, record.id):
                if event is None:
                    yield ": keepalive\n\n"
                    continue
                if event["type"] in TERMINAL:
                    break
                wanted = sent < partial_images and event["type"] == "preview"
                if wanted and event["step"] < event["total"]:  # the last one is the result
                    yield await events.partial(event["image"], sent)
                    sent += 1
            out = await read_output(state, await state.jobs.wait(record.id))
            if plan.cutout_model is not None:
                cut = await submit_cutout(state, plan.cutout_model, out, spec.priority, owner)
                running.append(cut)
                async for done in _wait(state, cut.id):
                    if done is None:
                        yield ": keepalive\n\n"
                    else:
                        out = await read_cutout(state, done, out.seed)
            finished = True
            yield events.completed(await final_bytes(plan, out), out.seed)
        except ApiError as exc:
            finished = True
            yield _error(exc)
        finally:
            state.bus.unsubscribe(queue)
            if not finished:  # the client went away
                await cancel_all(state, running)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _follow(
    state: AppState, queue: asyncio.Queue[Event], job_id: str
) -> AsyncIterator[Event | None]:
    """The job's logged events, then live ones (none twice); None every KEEPALIVE_S idle.

    The replay covers events sent before the response started streaming."""
    last = -1
    for event in await state.bus.history(job_id):
        last = event["id"]
        yield event
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
        except TimeoutError:
            yield None
            continue
        if event["id"] > last:
            last = event["id"]
            yield event


async def _wait(state: AppState, job_id: str) -> AsyncIterator[JobRecord | None]:
    """The finished job, after a None every KEEPALIVE_S while it runs."""
    waiter = asyncio.ensure_future(state.jobs.wait(job_id))
    try:
        while not (await asyncio.wait({waiter}, timeout=KEEPALIVE_S))[0]:
            yield None
        yield waiter.result()
    finally:
        waiter.cancel()
