"""Every native operation, once, as flows (see flow.py); `Client` and `AsyncClient`
inherit them and differ only in how they run commands."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from pixelpool.client.errors import JobCancelled, JobFailed, PixelpoolError
from pixelpool.client.flow import (
    Await,
    Flow,
    ImageInput,
    ImageInputs,
    Inputs,
    Request,
    Send,
    as_result,
    checked,
    follow,
    intercept,
    iteration,
    op_request,
    operation,
)
from pixelpool.client.types import ImageResult, Job, JobEvent, Listed, Progress

ProgressCallback = Callable[[Progress], Any]


def _send(request: Request) -> Flow[Any]:
    return checked((yield Send(request)))


def _json(method: str, path: str, **kwargs: Any) -> Flow[Any]:
    return (yield from _send(Request(method, path, **kwargs))).json()


def _job(job_id: str) -> Flow[Job]:
    return Job.from_json((yield from _json("GET", f"/api/job/{job_id}")))


class Operations:
    """The native API (`/api`) as methods. Diffusion fields are the server's
    (`docs/api.md`): `model`, `width`, `height`, `steps`, `cfg_scale`, `seed`,
    `sampler`, `negative_prompt`, `loras`, ...; they pass through as given."""

    # ---- running operations -----------------------------------------------------------

    @operation
    def run(
        self, op: str, *, image: ImageInputs = None, mask: ImageInputs = None,
        reference: ImageInputs = None, body: ImageInput | None = None, **fields: Any,
    ) -> Flow[Any]:  # fmt: skip
        """`POST /api/<op>`: waits for the job; an ImageResult, or the JSON result
        (tag and vision ops)."""
        inputs = Inputs(image, mask, reference, body)
        return as_result((yield from _send(op_request(op, fields, inputs))))

    @operation
    def enqueue(
        self, op: str, *, image: ImageInputs = None, mask: ImageInputs = None,
        reference: ImageInputs = None, body: ImageInput | None = None,
        idempotency_key: str | None = None, **fields: Any,
    ) -> Flow[str]:  # fmt: skip
        """`POST /api/enqueue/<op>`: the new job's id, at once."""
        inputs = Inputs(image, mask, reference, body)
        request = op_request(op, fields, inputs, enqueue=True, idempotency_key=idempotency_key)
        return (yield from _send(request)).json()["job_id"]

    @operation
    def generate(self, prompt: str, **fields: Any) -> Flow[ImageResult]:
        """txt2img (`/api/generate`); `seed` makes it reproducible, `X-Seed` is `.seed`."""
        return as_result((yield from _send(op_request("generate", {"prompt": prompt, **fields}))))

    @operation
    def generate_hires(self, prompt: str, **fields: Any) -> Flow[ImageResult]:
        request = op_request("generate-hires", {"prompt": prompt, **fields})
        return as_result((yield from _send(request)))

    @operation
    def generate_latents(self, prompt: str, **fields: Any) -> Flow[ImageResult]:
        request = op_request("generate-latents", {"prompt": prompt, **fields})
        return as_result((yield from _send(request)))

    @operation
    def img2img(
        self, image: ImageInputs, *, reference: ImageInputs = None, **fields: Any
    ) -> Flow[ImageResult]:
        inputs = Inputs(image=image, reference=reference)
        return as_result((yield from _send(op_request("img2img", fields, inputs))))

    @operation
    def inpaint(
        self, image: ImageInputs, mask: ImageInputs = None, *, reference: ImageInputs = None,
        **fields: Any,
    ) -> Flow[ImageResult]:  # fmt: skip
        """`mask`: white = repaint (or `mask_id` in fields: a segment job's mask)."""
        inputs = Inputs(image=image, mask=mask, reference=reference)
        return as_result((yield from _send(op_request("inpaint", fields, inputs))))

    @operation
    def enhance(self, image: ImageInputs, **fields: Any) -> Flow[ImageResult]:
        return as_result((yield from _send(op_request("enhance", fields, Inputs(image)))))

    @operation
    def upscale(self, image: ImageInputs, **params: Any) -> Flow[ImageResult]:
        """`scale`, or `width`/`height`; `model` (default: the first upscaler)."""
        return as_result((yield from _send(op_request("upscale", params, Inputs(image)))))

    @operation
    def remove_background(self, image: ImageInputs, **params: Any) -> Flow[ImageResult]:
        return as_result((yield from _send(op_request("bgremove", params, Inputs(image)))))

    @operation
    def tag(self, image: ImageInputs, **params: Any) -> Flow[dict[str, Any]]:
        """`{"tags": {tag: score}, "characters": {...}, "rating": {...}}`."""
        return as_result((yield from _send(op_request("tag", params, Inputs(image)))))

    @operation
    def vision(self, op: str, image: ImageInputs, **options: Any) -> Flow[dict[str, Any]]:
        """`segment`, `detect`, `depth` or `embed` on one or more images."""
        return as_result((yield from _send(op_request(op, options, Inputs(image)))))

    # ---- jobs -------------------------------------------------------------------------

    @operation
    def job(self, job_id: str) -> Flow[Job]:
        return (yield from _job(job_id))

    @operation
    def result(self, job_id: str, index: int = 0, **options: Any) -> Flow[Any]:
        """A finished job's result (ImageResult or JSON); Conflict if it failed."""
        params = {"index": index, **options}
        response = yield from _send(Request("GET", f"/api/job/{job_id}/result", params=params))
        if response.status == 202:
            raise PixelpoolError(f"job {job_id} has not finished", 202, "job_id")
        return as_result(response)

    @operation
    def cancel(self, job_id: str) -> Flow[str]:
        """`cancelled`, `cancelling` or `already_completed`."""
        return (yield from _json("POST", f"/api/job/{job_id}/cancel"))["status"]

    @iteration
    def events(self, job_id: str, last_event_id: int | None = None) -> Flow[None]:
        """The job's events until it ends (server-sent events, resumed after a dropped
        connection)."""
        yield from follow(job_id, last_event_id)

    @operation
    def wait(
        self, job_id: str, on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Flow[Job]:  # fmt: skip
        """Follow the job until it ends, calling `on_progress(Progress)` on each step and
        preview (an async callback is awaited on AsyncClient); the finished Job, or
        JobFailed / JobCancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = Progress(0, 0)

        def handle(event: JobEvent) -> Flow[None]:
            nonlocal seen
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish in {timeout}s")
            if event.type not in ("progress", "preview"):
                return
            seen = Progress(event.step or seen.step, event.total or seen.total,
                            event.stage or seen.stage, event.preview, event)  # fmt: skip
            if on_progress is not None and inspect.isawaitable(called := on_progress(seen)):
                yield Await(called)

        yield from intercept(follow(job_id), handle)
        job = yield from _job(job_id)
        if job.status == "cancelled":
            raise JobCancelled(job)
        if job.status != "completed" and job.status != "expired":
            raise JobFailed(job)
        return job

    # ---- lists ------------------------------------------------------------------------

    @operation
    def status(self) -> Flow[dict[str, Any]]:
        return (yield from _json("GET", "/api/status"))

    @operation
    def models(self) -> Flow[list[Listed]]:
        return [Listed.from_json(m) for m in (yield from _json("GET", "/api/model-list"))]

    @operation
    def loras(self) -> Flow[list[Listed]]:
        return [Listed.from_json(m) for m in (yield from _json("GET", "/api/lora-list"))]

    @operation
    def controlnets(self) -> Flow[list[Listed]]:
        return [Listed.from_json(m) for m in (yield from _json("GET", "/api/controlnet-list"))]

    @operation
    def ip_adapters(self) -> Flow[list[Listed]]:
        return [Listed.from_json(m) for m in (yield from _json("GET", "/api/ip-adapter-list"))]

    @operation
    def artifact(self, artifact_id: str) -> Flow[ImageResult]:
        """A stored result (`/api/artifacts/{id}`: vision masks, arrays, large JSON)."""
        return as_result((yield from _send(Request("GET", f"/api/artifacts/{artifact_id}"))))
