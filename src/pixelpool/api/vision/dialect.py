"""The Vision Models API dialect: `/inference/{model_type}` and the `/jobs` routes.

A request runs as a job like any other (durable queue, fair share, batching across
requests, cancel when the client hangs up): nothing here runs a model. Model types
are the seed's: sam3 (segment), grounding-dino (detect), depth-anything (depth),
dinov3 (embed, any DINOv2/v3 model). Errors on these paths are `{"detail": "..."}`.

Job statuses are the seed's: pending (queued), running, completed, failed,
cancelled (and expired, once a result's TTL has passed). `DELETE /jobs/{id}`
cancels a job that has not finished, then forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request
from pydantic import ValidationError

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError, ErrorInfo, add_error_format, field_error
from pixelpool.api.native import visible_job
from pixelpool.api.runs import renamed
from pixelpool.api.state import AppState, State
from pixelpool.api.validation import clean_prompt, no_surrogates, validation_error
from pixelpool.api.vision import model_routes
from pixelpool.api.vision.core import (
    OutputOptions,
    render_result,
    run_vision,
    split_output,
    vision_spec,
)
from pixelpool.api.vision.types import TYPE_OF_OP, op_of
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus

router = APIRouter(tags=["vision models API"])

# The seed's / transformers' names for the family's params, per model type.
ALIASES = {"grounding-dino": {"box_threshold": "threshold"}}
STATUS_NAMES = {JobStatus.queued: "pending"}
PREFIXES = ("/inference/", "/jobs", "/models/")
REMEMBERED_OUTPUTS = 10_000  # jobs whose submit-time output options are kept in memory
WAIT_FOR_CANCEL_S = 30.0
EXAMPLE = {"images": ["<base64 PNG or JPEG>"], "prompts": ["person", "car"], "threshold": 0.5,
           "output_format": "dense"}  # fmt: skip


def is_vision_path(path: str) -> bool:
    """The paths whose errors use this dialect's `{"detail": "..."}` envelope."""
    return path.startswith(PREFIXES)


def _detail(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    return info.status, {"detail": info.message}


def install(app: FastAPI) -> None:
    add_error_format(app, is_vision_path, _detail)
    app.include_router(router)
    app.include_router(model_routes.router)


def parse_output(fields: dict[str, Any]) -> OutputOptions:
    try:
        return OutputOptions.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error("priority", "must be an integer between 1 and 100")
    return value


def _unicode(field: str, value: Any) -> None:
    """Every string in the body is valid Unicode (it is stored with the job): 422 naming
    the top-level field that holds one that is not."""
    if isinstance(value, dict):
        items: list[Any] = [*value.keys(), *value.values()]
    else:
        items = list(value) if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, list | dict):
            _unicode(field, item)
        elif isinstance(item, str):
            try:
                no_surrogates(item)
            except ValueError as exc:
                raise field_error(field, str(exc)) from exc


def _clean(options: dict[str, Any]) -> None:
    """Prompts lose control characters, as on every dialect."""
    prompts = options.get("prompts")
    if isinstance(prompts, list):
        options["prompts"] = [clean_prompt(p) if isinstance(p, str) else p for p in prompts]


async def build(
    state: AppState, owner: str | None, model_type: str, body: dict[str, Any]
) -> tuple[JobSpec, OutputOptions]:
    """The job spec and output options of a request body (4xx naming the field)."""
    op = op_of(model_type)
    for key, value in body.items():
        _unicode(str(key), [key, value])
    options, output_fields = split_output(dict(body))
    output = parse_output(output_fields)
    if "images" not in options:
        raise field_error("images", "is required: a list of base64 images or http(s) URLs")
    images = options.pop("images")
    model = options.pop("model", None)
    priority = _priority(options.pop("priority", 100))
    _clean(options)
    used = {}
    for alias, name in ALIASES.get(model_type, {}).items():
        if alias in options:
            if name in options:
                raise field_error(alias, f"give {alias} or {name}, not both")
            options[name] = options.pop(alias)
            used[name] = alias
    if model is not None and not isinstance(model, str):
        raise field_error("model", "must be a model name")
    try:
        spec = await vision_spec(state, owner, op, model, images, options, priority)
    except ApiError as exc:  # name the field as the client sent it
        raise renamed(exc, used) from exc
    return spec, output


JsonBody = Annotated[dict[str, Any], Body(openapi_examples={"sam3": {"value": EXAMPLE}})]


@router.post("/inference/{model_type}", responses=docs.detail(*docs.SYNC, 500))
async def inference(
    model_type: str, body: JsonBody, request: Request, state: State, caller: Caller
) -> dict[str, Any]:
    """Run a model on a batch of images and return its results (waits for the job).

    Body: `images` (1..64, base64 or http(s) URLs), `model` (optional: default the
    first installed model of the type), the model's options (sam3: `prompts`,
    `boxes`, `box_labels`, `threshold`, `mask_threshold`; grounding-dino: `prompts`,
    `threshold` or `box_threshold`, `text_threshold`; dinov3: `pooling`,
    `patch_features`, `normalize`), and the output options (`output_format`,
    `tolerance`, `array_format`, `depth_format`, `return`)."""
    caller.require("generate")
    spec, output = await build(state, caller.owner, model_type, body)
    record = await run_vision(state, request, caller.owner, spec)
    rendered = await render_result(state, request, caller.owner, record, output)
    return {"model_type": model_type, **rendered}


# --- jobs -------------------------------------------------------------------------


def _outputs(state: AppState) -> OrderedDict[str, OutputOptions]:
    """Submit-time output options by job id (in memory: after a restart, defaults)."""
    store = getattr(state, "vision_outputs", None)
    if store is None:
        store = OrderedDict()
        state.vision_outputs = store  # type: ignore[attr-defined]
    return store


def _remember(state: AppState, job_id: str, output: OutputOptions) -> None:
    outputs = _outputs(state)
    outputs[job_id] = output
    while len(outputs) > REMEMBERED_OUTPUTS:
        outputs.popitem(last=False)


def status_name(status: JobStatus) -> str:
    return STATUS_NAMES.get(status, status.value)


def job_summary(record: JobRecord) -> dict[str, Any]:
    return {
        "job_id": record.id,
        "model_type": TYPE_OF_OP.get(record.spec.op),
        "model": record.spec.model["name"],
        "status": status_name(record.status),
        "created_at": record.created,
        "started_at": record.started,
        "completed_at": record.finished,
        "num_images": len(record.spec.params.get("images") or ()),
        "error": record.error,
    }


async def vision_job(state: AppState, job_id: str, caller: Any) -> JobRecord:
    """The caller's vision job, or 404 (unknown, another key's, or not a vision job)."""
    record = await visible_job(state, job_id, caller)
    if record.spec.family != "vision":
        raise ApiError(404, f"job_id: job not found: {job_id}", "job_id")
    return record


@router.post("/jobs/submit/{model_type}", responses=docs.detail(*docs.SUBMIT))
async def submit_job(
    model_type: str, body: JsonBody, state: State, caller: Caller
) -> dict[str, Any]:
    """Queue the same request as `/inference/{model_type}`; poll `GET /jobs/{job_id}`."""
    caller.require("generate")
    spec, output = await build(state, caller.owner, model_type, body)
    record = await ops.submit(state, spec, caller.owner)
    _remember(state, record.id, output)
    return {"job_id": record.id, "status": status_name(record.status), "model_type": model_type}


@router.get("/jobs/{job_id}", responses=docs.detail(*docs.AUTH, 404, 409, 410, 422))
async def get_job(
    job_id: str,
    request: Request,
    state: State,
    caller: Caller,
    output_format: str | None = None,
    tolerance: float | None = None,
    array_format: str | None = None,
    depth_format: str | None = None,
    return_mode: Annotated[str | None, Query(alias="return")] = None,
) -> dict[str, Any]:
    """The job's status, and once completed its `result` (as `/inference` returns it),
    encoded per the submit's output options, or these query parameters if given."""
    record = await vision_job(state, job_id, caller)
    view = job_summary(record)
    if record.status is JobStatus.completed:
        given = {"output_format": output_format, "tolerance": tolerance,
                 "array_format": array_format, "depth_format": depth_format,
                 "return": return_mode}  # fmt: skip
        base = _outputs(state).get(record.id, OutputOptions())
        fields = {
            **base.model_dump(by_alias=True),
            **{k: v for k, v in given.items() if v is not None},
        }
        view["result"] = await render_result(
            state, request, caller.owner, record, parse_output(fields)
        )
    return view


@router.delete("/jobs/{job_id}", responses=docs.detail(*docs.AUTH, 404))
async def delete_job(job_id: str, state: State, caller: Caller) -> dict[str, Any]:
    """Cancel the job if it has not finished, then forget it (a later GET is a 404)."""
    record = await vision_job(state, job_id, caller)
    status = record.status
    if not status.finished:
        with contextlib.suppress(KeyError):
            await state.jobs.cancel(job_id)
        try:
            status = (await asyncio.wait_for(state.jobs.wait(job_id), WAIT_FOR_CANCEL_S)).status
        except TimeoutError:
            # Still stopping: it ends cancelled; forget it once it has.
            asyncio.get_running_loop().create_task(_forget_when_done(state, job_id))
            return {"job_id": job_id, "status": "cancelling", "deleted": False}
    await state.jobs.store.delete(job_id)
    _outputs(state).pop(job_id, None)
    return {"job_id": job_id, "status": status_name(status), "deleted": True}


async def _forget_when_done(state: AppState, job_id: str) -> None:
    await state.jobs.wait(job_id)
    await state.jobs.store.delete(job_id)
    _outputs(state).pop(job_id, None)


@router.get("/jobs", responses=docs.detail(*docs.AUTH, 422))
async def list_jobs(
    state: State,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The caller's vision jobs, newest first, one page at a time."""
    records, total = await state.jobs.store.owned(
        caller.owner, "vision", limit, offset, everyone=caller.owner is None
    )
    return {"jobs": [job_summary(r) for r in records], "total": total, "limit": limit,
            "offset": offset}  # fmt: skip
