"""What every vision route shares (the Vision Models API dialect and the native
`/api/segment|detect|depth|embed`): build the job, run it, render its result.

- `vision_spec(state, owner, op, model, images, options, priority)` -> JobSpec
- `run_vision(state, request, owner, spec)` -> the finished JobRecord (waits; the
  job is cancelled if the client hangs up)
- `render_result(state, request, owner, record, output)` -> the response body
- `OutputOptions` (output_format, tolerance, array_format, depth_format, return)
"""

from __future__ import annotations

from starlette.requests import Request

from pixelpool.api import ops
from pixelpool.api.state import AppState
from pixelpool.api.vision.jobs import (
    ImageInput,
    StoredImage,
    build_vision_spec,
    check_images,
    resolve_vision_model,
    store_inputs,
    vision_spec,
)
from pixelpool.api.vision.render import (
    DEPTH_FORMATS,
    OUTPUT_FIELDS,
    OutputOptions,
    check_finished,
    depth_png,
    render_result,
    render_results,
    split_output,
)
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.jobs.spec import JobRecord, JobSpec


async def run_vision(
    state: AppState, request: Request, owner: str | None, spec: JobSpec
) -> JobRecord:
    """Submit the job and wait for it (cancelled if the client disconnects first)."""
    record = await ops.submit(state, spec, owner)
    return await wait_or_cancel(state, request, record.id)


__all__ = [
    "DEPTH_FORMATS",
    "OUTPUT_FIELDS",
    "ImageInput",
    "OutputOptions",
    "StoredImage",
    "build_vision_spec",
    "check_finished",
    "check_images",
    "depth_png",
    "render_result",
    "render_results",
    "resolve_vision_model",
    "run_vision",
    "split_output",
    "store_inputs",
    "vision_spec",
]
