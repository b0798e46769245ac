"""OpenAI Images API routes: generations (JSON), edits and variations (multipart), url results.

Edits with a mask are inpainting (the mask's transparent, or white, areas are
repainted); without a mask, and variations, are img2img. Both stream like
generations (`image_edit.*` events for edits). An edit with several `image[]` edits
the first; when an IP-Adapter is installed for the model's architecture the others
are its reference images (`ip_adapter_scale`), else several images are a 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller, Principal
from pixelpool.api.diffusion import references
from pixelpool.api.diffusion.specs import img2img_spec
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.openai.plan import (
    EditRequest,
    GenerationRequest,
    Plan,
    StreamOptions,
    VariationRequest,
    image_items,
    images_response,
    model_name,
    plan_images,
)
from pixelpool.api.openai.stream import stream_generation
from pixelpool.api.openai.transparent import run_transparent
from pixelpool.api.runs import run_images
from pixelpool.api.state import AppState, State
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import check_id, check_prompts, validate_form
from pixelpool.api.vision import chain

router = APIRouter(prefix="/v1/images", tags=["openai"])
MAX_FORM_PARTS = 64
_STREAM = docs.event_stream("`stream: true`: partial images, then the result")
_ERRORS = docs.openai(*docs.SYNC, 500)
_LORAS = {"loras": {"type": "string", "description": "JSON list of {name, weight}"}}


def _form_doc(model: type[BaseModel], mask: bool) -> dict[str, Any]:
    files = {"image": "the input image: PNG, JPEG or WebP"}
    if mask:
        files["mask"] = "transparent (or white) areas are repainted"
    fields = {**docs.form_fields(model), **_LORAS}
    needs_prompt = "prompt" in model.model_json_schema().get("required", [])
    required = ["image", *(["prompt"] if needs_prompt else [])]
    return docs.multipart_body(files, fields, required)


async def _answer(
    state: AppState,
    request: Request,
    plan: Plan,
    caller: Principal,
    stream: StreamOptions | None,
    prefix: str,
) -> Any:
    """The images response, or (stream: true) server-sent events."""
    if stream is not None and stream.stream:
        return await stream_generation(
            state, plan, stream.partial_images or 0, caller.owner, prefix
        )
    if plan.cutout_model is not None:
        outputs = await run_transparent(state, request, plan.specs, plan.cutout_model, caller.owner)
    else:
        outputs = await run_images(state, request, plan.specs, caller.owner)
    return images_response(plan, await image_items(state, request, plan, outputs, caller.owner))


@router.post(
    "/generations",
    responses={**_STREAM, **_ERRORS},
    openapi_extra=docs.example(docs.OPENAI),
)
async def generations(
    req: GenerationRequest, request: Request, state: State, caller: Caller
) -> Any:
    caller.require("generate")
    plan = plan_images(state, req, req.prompt, lambda fields: ops.txt2img_spec(state, **fields))
    return await _answer(state, request, plan, caller, req, "image_generation")


async def _form(request: Request, model: type[BaseModel]) -> tuple[Any, dict[str, list[bytes]]]:
    """The text fields (validated as `model`) and the uploaded files of a multipart request."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise field_error("image", "send multipart/form-data with an `image` file", 400)
    try:
        form = await request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS)
    except Exception as exc:  # Starlette raises several parser errors
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    fields: dict[str, Any] = {}
    files: dict[str, list[bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(key.removesuffix("[]"), []).append(await value.read())
        else:
            fields[key] = value
    try:
        return validate_form(model, fields), files
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def _inputs(
    state: AppState, files: dict[str, list[bytes]], owner: str | None, mask_allowed: bool
) -> tuple[list[Any], list[Any]]:
    """The one input image (and mask) checked and stored, as img2img_spec wants them."""
    unknown = sorted(set(files) - {"image", "mask"})
    if unknown:
        raise field_error(unknown[0], "unexpected file field", 400)
    images, masks = files.get("image", []), files.get("mask", [])
    if len(images) != 1:
        raise field_error("image", f"send exactly one image file, got {len(images)}", 400)
    if masks and not mask_allowed:
        raise field_error("mask", "variations take no mask; use /v1/images/edits", 400)
    if len(masks) > 1:
        raise field_error("mask", "send at most one mask file", 400)
    path, checked = await store_image(state, images[0], "image", owner)
    mask_paths = [(await store_image(state, m, "mask", owner))[0] for m in masks]
    return [(path, (checked.width, checked.height))], mask_paths


async def _mask_by_id(
    state: AppState, mask_id: str, owner: str | None, images: list[Any], files: int
) -> Any:
    """The mask `mask_id` names (a SAM 3 mask, api/vision/chain.py), stored as an upload."""
    if files:
        raise field_error("mask_id", "send a `mask` file or a mask_id, not both", 400)
    data = await chain.mask_from_id(state, mask_id, owner, images[0][1])
    return (await store_image(state, data, "mask_id", owner))[0]


@router.post("/edits", responses={**_STREAM, **_ERRORS}, openapi_extra=_form_doc(EditRequest, True))
async def edits(request: Request, state: State, caller: Caller) -> Any:
    caller.require("generate")
    req, files = await _form(request, EditRequest)
    check_prompts(state.settings.limits, req.prompt, req.negative_prompt)
    entry = ops.resolve_model(state, model_name(state, req.model))  # a 404 before storing
    extra = files.get("image", [])[1:]
    adapter = state.registry.ip_adapter(entry.architecture) if extra else None
    if adapter is not None:  # the first image is edited, the others guide it
        files = {**files, "image": files["image"][:1]}
    images, masks = await _inputs(state, files, caller.owner, mask_allowed=True)
    if req.mask_id is not None:
        masks = [await _mask_by_id(state, req.mask_id, caller.owner, images, len(masks))]
    op = "inpaint" if masks else "img2img"
    refs = await references.store_uploads(state, extra, "image", caller.owner, first=1)
    scale = references.DEFAULT_SCALE if req.ip_adapter_scale is None else req.ip_adapter_scale

    def build(fields: dict[str, Any]) -> Any:
        spec = img2img_spec(state, {**fields, "strength": req.strength}, images, masks, op)
        return spec if adapter is None else references.attach(spec, adapter, scale, refs)

    plan = plan_images(state, req, req.prompt, build)
    return await _answer(state, request, plan, caller, req, "image_edit")


@router.post("/variations", responses=_ERRORS, openapi_extra=_form_doc(VariationRequest, False))
async def variations(request: Request, state: State, caller: Caller) -> Any:
    caller.require("generate")
    req, files = await _form(request, VariationRequest)
    check_prompts(state.settings.limits, req.prompt, req.negative_prompt)
    ops.resolve_model(state, model_name(state, req.model))
    images, _ = await _inputs(state, files, caller.owner, mask_allowed=False)

    def build(fields: dict[str, Any]) -> Any:
        return img2img_spec(state, {**fields, "strength": req.strength}, images)

    plan = plan_images(state, req, req.prompt, build)
    return await _answer(state, request, plan, caller, None, "image_generation")


@router.get(
    "/data/{file_id}",
    name="openai_image_data",
    response_class=FileResponse,
    responses={**docs.images(), **docs.openai(*docs.AUTH, 404)},
)
async def image_data(file_id: str, state: State, caller: Caller) -> FileResponse:
    """A `url` result, for the key that made it (another key's is 404); expires with the TTL."""
    art_id = check_id("file_id", file_id.split(".", 1)[0], "image")
    art = await state.jobs.artifacts.get(art_id)
    if art is None or not caller.may_see(art.owner):
        raise ApiError(404, "file_id: image not found or expired", "file_id")
    return FileResponse(art.path, media_type=art.media_type)
