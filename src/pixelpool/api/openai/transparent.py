"""`background: "transparent"`: each generated image goes through a bgremove job.

The generation jobs run as for an opaque request (always as PNG, so the cut-out
starts from lossless pixels); as each finishes, a bgremove job on its image is
submitted through the same job service, for the same key and at the same
priority, so it is durable, shares the workers fairly, can be cancelled and has
events like any job. Its RGBA PNG is the answer (re-encoded for WebP). The model
is the first installed bgremove model by name.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from starlette.requests import Request

from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.runs import Output, cancel_all, read_output, submit_all
from pixelpool.api.state import AppState
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.families.bgremove.params import BgRemoveParams
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus
from pixelpool.registry.entry import ModelEntry

NO_BGREMOVE = (
    "'transparent' needs a background-removal model, and none is installed; use 'opaque' or 'auto'"
)
NO_ALPHA = "'transparent' needs output_format png or webp (JPEG has no alpha channel)"


def bgremove_model(state: AppState) -> ModelEntry | None:
    """The model that makes backgrounds transparent: the first bgremove model by name."""
    models = [e for e in state.registry.entries() if e.family == "bgremove"]
    return min(models, key=lambda e: e.name) if models else None


def check_transparent(state: AppState, output_format: str) -> dict[str, Any]:
    """The bgremove model (as a job names it) for a transparent request, or a 400 that
    names `background`."""
    if output_format == "jpeg":
        raise field_error("background", NO_ALPHA, 400)
    entry = bgremove_model(state)
    if entry is None:
        raise field_error("background", NO_BGREMOVE, 400)
    if not any(slot.serves("bgremove") for slot in state.scheduler.slots):
        message = "background: no device is configured to run the bgremove family"
        raise ApiError(503, message, "background")  # before generating, not after
    return entry.to_wire()


async def submit_cutout(
    state: AppState, model: dict[str, Any], out: Output, priority: int, owner: str | None
) -> JobRecord:
    """A bgremove job on one generated image (its stored result file is the input)."""
    art = await state.jobs.artifacts.get(out.artifact_id)
    if art is None:
        raise ApiError(410, "the generated image expired before its background was removed")
    params = BgRemoveParams(image=str(art.path), image_width=out.width, image_height=out.height)
    spec = JobSpec(
        op="bgremove", family="bgremove", model=model, params=params.model_dump(),
        batch_key=list(params.batch_key()), priority=priority,
    )  # fmt: skip
    return await ops.submit(state, spec, owner)


async def read_cutout(state: AppState, record: JobRecord, seed: int) -> Output:
    """The RGBA image of a finished bgremove job, with its generation's seed."""
    if record.status is JobStatus.failed:
        message = f"background removal failed: {record.error or 'unknown error'}"
        raise ApiError(500, message, "background")
    return dataclasses.replace(await read_output(state, record), seed=seed)


async def run_transparent(
    state: AppState,
    request: Request,
    specs: list[JobSpec],
    model: dict[str, Any],
    owner: str | None,
) -> list[Output]:
    """Generate, then cut out, every image (each cut-out starts as soon as its image is
    done); a client that hangs up, or any failure, cancels every job still running."""
    records = await submit_all(state, specs, owner)
    started = list(records)

    async def one(record: JobRecord) -> Output:
        out = await read_output(state, await wait_or_cancel(state, request, record.id))
        cut = await submit_cutout(state, model, out, record.spec.priority, owner)
        started.append(cut)
        return await read_cutout(state, await wait_or_cancel(state, request, cut.id), out.seed)

    try:
        return list(await asyncio.gather(*(one(r) for r in records)))
    except BaseException:
        await cancel_all(state, started)
        raise
