"""Native vision routes: `POST /api/segment|detect|depth|embed` (wait, return the JSON
result) and `POST /api/enqueue/<op>` (return `{"job_id"}`; the result then comes from
`GET /api/job/{id}/result`, which takes the output options as query parameters).

The body is JSON (`images`: base64 strings or http(s) URLs, plus the op's options)
or multipart (`image` file parts, one or several, plus a `params` JSON object with
the same fields). Spec building and result rendering are the vision core's
(`api/vision/core.py`), shared with the Vision Models API dialect; this module only
reads the native request shapes. `segment` also takes `boxes_from` (a detect job or
stored detect result, see `api/vision/chain.py`): its boxes become SAM 3 box prompts,
and its images are used when the request sends none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState, State
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import parse_json, validate_form, validation_error
from pixelpool.api.vision import chain, core
from pixelpool.api.vision.jobs import precheck_options
from pixelpool.families.vision.params import MAX_IMAGES, PARAMS
from pixelpool.jobs.spec import JobRecord, JobSpec

router = APIRouter(prefix="/api", tags=["vision"])
OPS: tuple[str, ...] = tuple(PARAMS)
SUMMARIES = {
    "segment": "SAM 3: instance masks for text prompts and/or boxes (or `boxes_from`)",
    "detect": "Grounding DINO: boxes, scores and labels for text prompts",
    "depth": "Depth Anything: relative depth at each input's size",
    "embed": "DINOv2 / DINOv3: image embeddings (and patch features)",
}


@dataclass
class NativeVisionRequest:
    """A native vision request, read from JSON or multipart."""

    uploads: list[bytes] | None  # multipart `image` parts
    images: Any  # JSON `images`
    model: Any
    priority: int
    options: dict[str, Any]  # the op's params
    output: dict[str, Any]  # OutputOptions fields
    boxes_from: Any


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise field_error("priority", "must be an integer between 1 and 100")
    return value


async def _read_body(request: Request) -> tuple[list[bytes] | None, dict[str, Any]]:
    """(uploaded images or None, the fields): multipart `image` parts + `params`, or JSON."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = parse_json(await request.body())
        if not isinstance(body, dict):
            raise field_error("body", "must be a JSON object", 400)
        return None, body
    try:
        form = await request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES + 4)
    except Exception as exc:  # Starlette raises several parser errors
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    unknown = sorted(set(form.keys()) - {"image", "params"})
    if unknown:
        raise field_error(unknown[0], "unexpected part; send `image` files and `params` JSON")
    parts = form.getlist("image")
    if any(not isinstance(p, UploadFile) for p in parts):
        raise field_error("image", "must be a file part, not a text field")
    raw = form.get("params") or "{}"
    params = parse_json(raw if isinstance(raw, str) else await raw.read(), "params", 422)
    if not isinstance(params, dict):
        raise field_error("params", "must be a JSON object")
    if "images" in params:
        raise field_error("images", "send the images as `image` file parts in multipart")
    return [await p.read() for p in parts if isinstance(p, UploadFile)], params


async def read_request(request: Request, op: str) -> NativeVisionRequest:
    uploads, body = await _read_body(request)
    body = dict(body)
    model, priority = body.pop("model", None), _priority(body.pop("priority", 100))
    images = body.pop("images", None)
    boxes_from = body.pop("boxes_from", None) if op == "segment" else None
    options, output = core.split_output(body)
    return NativeVisionRequest(uploads, images, model, priority, options, output, boxes_from)


def output_options(values: dict[str, Any], text: bool = False) -> core.OutputOptions:
    """The output options (`output_format`, `array_format`, ...), or a 422 naming one."""
    try:
        if text:
            return validate_form(core.OutputOptions, values)
        return core.OutputOptions.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _boxes_in(sizes: list[tuple[int, int]], stored: list[core.StoredImage], boxes: Any) -> Any:
    """Boxes found on the detect inputs, in pixels of the images this job segments."""
    out = []
    for (w, h), image, per in zip(sizes, stored, boxes, strict=True):
        sx, sy = (image.width / w, image.height / h) if w and h else (1.0, 1.0)
        out.append([[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in per])
    return out


async def _detected(
    state: AppState, owner: str | None, req: NativeVisionRequest, count: int
) -> chain.Detections:
    """The boxes `boxes_from` names, checked against the request (one list per image)."""
    if req.options.get("boxes") is not None:
        raise field_error("boxes_from", "send boxes or boxes_from, not both")
    found = await chain.detections(state, chain.parse_boxes_from(req.boxes_from), owner)
    if count and count != len(found.boxes):
        raise field_error(
            "boxes_from",
            f"the detect result has {len(found.boxes)} image(s), the request {count}",
        )
    if not count and found.images is None:
        raise field_error("images", "are required: boxes_from names a stored result, not a job")
    if not req.options.get("prompts") and not any(found.boxes):
        raise field_error("boxes_from", "no boxes left (none found, or all filtered out)")
    return found


async def _store(
    state: AppState, owner: str | None, req: NativeVisionRequest, found: chain.Detections | None
) -> list[core.StoredImage]:
    if req.uploads:
        stored = []
        for i, data in enumerate(req.uploads):
            name = "image" if len(req.uploads) == 1 else f"image[{i}]"
            path, checked = await store_image(state, data, name, owner)
            stored.append(core.StoredImage(path, checked.width, checked.height))
        return stored
    if req.images is not None:
        return await core.store_inputs(state, owner, core.check_images(req.images))
    assert found is not None and found.images is not None
    for path in found.images:
        if not Path(path).is_file():
            raise ApiError(410, "boxes_from: the detect job's images have expired", "boxes_from")
    pairs = zip(found.images, found.sizes, strict=True)
    return [core.StoredImage(Path(p), w, h) for p, (w, h) in pairs]


async def build(
    request: Request, state: AppState, owner: str | None, op: str, sync: bool = True
) -> tuple[JobSpec, core.OutputOptions]:
    """Check everything (model, options, `boxes_from`) before storing any image."""
    req = await read_request(request, op)
    output = output_options(req.output)
    if req.output and not sync:
        raise field_error(next(iter(req.output)), "give output options to "
                          "GET /api/job/{id}/result as query parameters")  # fmt: skip
    if req.uploads is not None and req.images is not None:
        raise field_error("images", "send image files or `images`, not both")
    model = req.model
    if model is not None:
        ops.check_text_field("model", model)
    entry = core.resolve_vision_model(state, op, model, options=req.options)
    count = len(req.uploads or []) + len(core.check_images(req.images) if req.images else [])
    found = None
    if req.boxes_from is not None:
        found = await _detected(state, owner, req, count)
        req.options["boxes"] = found.boxes
    elif op == "segment" and not req.options.get("prompts") and not req.options.get("boxes"):
        raise field_error("prompts", "give prompts, boxes or boxes_from")
    if not count and found is None:
        raise field_error("images" if req.uploads is None else "image", "send at least one image")
    precheck_options(op, req.options, count or len(found.boxes if found else []))
    stored = await _store(state, owner, req, found)
    if found is not None:
        req.options["boxes"] = _boxes_in(found.sizes, stored, found.boxes)
    return core.build_vision_spec(op, entry, stored, req.options, req.priority), output


async def job_result(
    state: AppState, request: Request, owner: str | None, record: JobRecord
) -> JSONResponse:
    """A completed vision job for `GET /api/job/{id}/result`, with the output options
    given as query parameters (`?output_format=rle&array_format=npy`)."""
    query = {k: v for k, v in request.query_params.items() if k != "index"}
    output = output_options(query, True)
    body = await core.render_result(state, request, owner, record, output)
    return JSONResponse(body, headers={"X-Job-Id": record.id})


def _body_doc(op: str) -> dict[str, Any]:
    schema = PARAMS[op].model_json_schema()
    props = {k: v for k, v in schema["properties"].items() if k not in ("images", "image_sizes")}
    output = core.OutputOptions.model_json_schema(by_alias=True)["properties"]
    common = {"model": {"type": "string"}, "priority": {"type": "integer"}}
    if op == "segment":
        common["boxes_from"] = {
            "description": 'a detect job id or stored detect result id, or {"id", "labels", '
            '"min_score"}: its boxes become box prompts (and its images, if none are sent)'
        }
    images = {"type": "array", "items": {"type": "string"},
              "description": "base64 images (or data: URLs), or http(s) URLs"}  # fmt: skip
    json_schema = {"type": "object", "properties": {"images": images, **common, **props, **output}}
    multipart = docs.multipart_body(
        {"image": "the image(s): PNG, JPEG or WebP"},
        {"params": {"type": "string", "description": "JSON object: the JSON body's fields"}},
        required=["image"],
        many=True,
    )["requestBody"]["content"]
    content = {"application/json": {"schema": json_schema}, **multipart}
    return {"requestBody": {"required": True, "content": content}}


def _add(op: str) -> None:
    body = _body_doc(op)

    async def run_sync(request: Request, state: State, caller: Caller) -> dict[str, Any]:
        caller.require("generate")
        spec, output = await build(request, state, caller.owner, op)
        record = await core.run_vision(state, request, caller.owner, spec)
        return await core.render_result(state, request, caller.owner, record, output)

    async def run_async(
        request: Request,
        state: State,
        caller: Caller,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, str]:
        caller.require("generate")
        spec, _ = await build(request, state, caller.owner, op, sync=False)
        record = await ops.submit(state, spec, caller.owner, idempotency_key)
        return {"job_id": record.id}

    result = {**docs.json_result(f"The {op} result"), **docs.native(*docs.SYNC)}
    router.add_api_route(f"/{op}", run_sync, methods=["POST"], summary=SUMMARIES[op],
                         responses=result, openapi_extra=body)  # fmt: skip
    router.add_api_route(f"/enqueue/{op}", run_async, methods=["POST"], summary=SUMMARIES[op],
                         responses=docs.native(*docs.SUBMIT), openapi_extra=body)  # fmt: skip


for _op in OPS:
    _add(_op)
