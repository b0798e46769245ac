"""Routes for one-image operations of any family (upscale, bgremove, tag...).

Each op takes the image as the raw request body (its params in the query string) or
as multipart `image` + `params` JSON, and has a sync route (`/api/<op>`: waits,
returns the result: an image, or JSON for a JSON result) and an async one
(`/api/enqueue/<op>`: returns the job id). The params are the family's own
(`families/<name>/params.py`), validated here so that bad input is a 4xx naming
the field before anything is queued.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from pixelpool import families
from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.job_routes import add_job_routes
from pixelpool.api.state import AppState
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import parse_json, validate_form, validation_error
from pixelpool.api.vision import chain
from pixelpool.jobs.spec import JobSpec

SET_BY_SERVER = ("image", "image_width", "image_height")  # from the upload, never the client


async def _read(request: Request) -> tuple[bytes, dict[str, Any], bool]:
    """(image bytes, params, params-are-text): multipart, else the raw body + query."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.body(), dict(request.query_params), True
    try:
        form = await request.form(max_files=2, max_fields=4)
    except Exception as exc:  # Starlette raises several parser errors
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    image = form.get("image")
    if image is not None and not isinstance(image, UploadFile):
        raise field_error("image", "send the image as a file part named `image`")
    raw = form.get("params") or "{}"
    params = parse_json(raw if isinstance(raw, str) else await raw.read(), "params", 422)
    if not isinstance(params, dict):
        raise field_error("params", "must be a JSON object")
    return (await image.read() if image is not None else b""), params, False


async def _image_by_id(
    state: AppState, data: bytes, params: dict[str, Any], owner: str | None
) -> bytes:
    """The uploaded image, or the stored one `image_id` names (a job's image result or
    an image artifact, see api/vision/chain.py); one of them, not both."""
    image_id = params.pop("image_id", None)
    if image_id is None:
        if not data:
            raise field_error("image", "send the image (body or `image` part) or an image_id")
        return data
    if data:
        raise field_error("image_id", "send an image or an image_id, not both")
    return await chain.image_from_id(state, image_id, owner)


def _priority(value: Any) -> int:
    try:
        priority = int(value)
    except (TypeError, ValueError) as exc:
        raise field_error("priority", "must be an integer") from exc
    if isinstance(value, bool) or not 1 <= priority <= 100:
        raise field_error("priority", "must be an integer between 1 and 100")
    return priority


async def build_spec(
    request: Request, state: AppState, owner: str | None, family: str, op: str
) -> JobSpec:
    """Check the request (model of this family, image, params), store the image, and
    return the job's spec."""
    data, params, text = await _read(request)
    model = params.pop("model", None)
    priority = _priority(params.pop("priority", 100))
    for name in SET_BY_SERVER:
        if name in params:
            raise field_error(name, "is set by the server from the uploaded image")
    entry = ops.resolve_model(state, model, family=family)  # 404 / 422 before storing
    data = await _image_by_id(state, data, params, owner)
    path, checked = await store_image(state, data, "image", owner)
    fields = {**params, "image": str(path), "image_width": checked.width,
              "image_height": checked.height}  # fmt: skip
    cls = families.get(family).operations[op].params
    try:
        validated = validate_form(cls, fields) if text else cls.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return JobSpec(op=op, family=family, model=entry.to_wire(), params=validated.model_dump(),
                   batch_key=list(validated.batch_key()), priority=priority)  # fmt: skip


def add_image_op(router: APIRouter, family: str, op: str, summary: str) -> None:
    """`POST /api/<op>` (waits, returns the result) and `/api/enqueue/<op>` (the job id)."""
    operation = families.get(family).operations[op]
    fields = {k: v for k, v in docs.form_fields(operation.params).items()
              if k not in SET_BY_SERVER}  # fmt: skip
    extra = {"model": {"type": "string"}, "priority": {"type": "integer"},
             "image_id": {"type": "string", "description": "instead of the image: a stored "
                          "image, `<job id>[:<index>]` or an image artifact id"}}  # fmt: skip
    body = docs.merge(
        docs.raw_body(*docs.IMAGE_TYPES, description="the image: PNG, JPEG or WebP"),
        docs.query_params(**fields, **extra),
    )
    result = docs.json_result() if operation.result == "json" else docs.images()

    async def build(request: Request, state: AppState, owner: str | None) -> JobSpec:
        return await build_spec(request, state, owner, family, op)

    add_job_routes(router, op, build, summary, body, result)
