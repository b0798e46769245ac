"""Native diffusion routes beyond /api/generate: img2img, inpaint, hi-res, latents, LoRAs.

Each op has a sync route (`/api/<op>`: waits, returns the bytes) and an async one
(`/api/enqueue/<op>`: returns the job id). Both share one builder that checks the
request, stores its inputs as artifacts and returns the JobSpec. This router is
included before `native.router`, so these specific enqueue paths win over its
catch-all `/api/enqueue/{operation}`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops, visibility
from pixelpool.api.auth import Caller
from pixelpool.api.diffusion import caches, controlnet, enhance, inputs, references, specs
from pixelpool.api.errors import field_error
from pixelpool.api.job_routes import Builder, add_job_routes
from pixelpool.api.native import GenerateRequest
from pixelpool.api.state import AppState, State
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import Prompt, check_prompts, parse_json
from pixelpool.api.vision import chain
from pixelpool.families.diffusion.latent_format import (
    format_for,
)
from pixelpool.jobs.spec import JobSpec

router = APIRouter(prefix="/api", tags=["native"])


class Img2ImgRequest(GenerateRequest):
    """The `params` JSON of /api/img2img and /api/inpaint (multipart with `image`, `mask`)."""

    prompt: Prompt = ""
    width: int | None = Field(None, description="0 or absent: the input's size")
    strength: float | None = Field(None, ge=0, le=1, description="default 0.75")
    mask_id: str | None = Field(
        None,
        description="inpaint: the mask by id instead of a `mask` file: a segment job "
        "`<job id>[:<image>[:<prompt>[:<instance>]]]` (union of what it selects) or a mask "
        "artifact id (.npy or image)",
    )


class HiresRequest(GenerateRequest):
    """/api/generate-hires: width/height is the target; the base pass runs smaller."""

    hires_steps: int | None = Field(None, description="default 15")
    hires_denoising_strength: float | None = Field(None, ge=0, le=1, description="default 0.33")
    base_width: int | None = Field(None, description="default: half the target, up to 64")
    base_height: int | None = None
    hires_upscaler: Literal["latent", "pixel"] = "latent"


class LatentsRequest(GenerateRequest):
    latent_format: Literal["safetensors", "fxlt"] | None = Field(
        None, description="default: from the Accept header (application/x-fox-latent: fxlt)"
    )


class LatentsHiresQuery(HiresRequest):
    """/api/hires-latents: the hires parameters as query parameters."""

    prompt: Prompt = ""
    latent_format: Literal["safetensors", "fxlt"] | None = None


_validate = inputs.validate


def _fields(
    req: BaseModel, state: AppState, references: bool = False, controlnets: bool = False
) -> dict[str, Any]:
    return inputs.request_fields(req, state, references, controlnets)


async def _json(request: Request, model: type[BaseModel]) -> Any:
    return _validate(model, parse_json(await request.body()))


async def _multipart(
    request: Request,
) -> tuple[Img2ImgRequest, list[bytes], list[bytes], list[bytes]]:
    """`params` (JSON) and the `image` / `mask` / `reference` files of a multipart request."""
    params, files = await inputs.read_multipart(request, ("image", "mask", "reference"))
    req = _validate(Img2ImgRequest, params)
    return req, files["image"], files["mask"], files["reference"]


async def _with_references(
    state: AppState, spec: JobSpec, req: Img2ImgRequest, files: list[bytes], owner: str | None
) -> JobSpec:
    """`reference` files (or `ip_adapter.images` in the params) guide the result."""
    ref = req.ip_adapter or references.IPAdapterRequest()
    if files and ref.images:
        raise field_error("reference", "send `reference` files or ip_adapter.images, not both")
    if files:
        return await references.from_uploads(
            state, spec, owner, files, name=ref.name, scale=ref.scale
        )
    if req.ip_adapter is not None:
        return await references.from_encoded(
            state, spec, owner, ref.images, name=ref.name, scale=ref.scale
        )
    return spec


def _image_builder(op: str) -> Builder:
    async def build(request: Request, state: AppState, owner: str | None) -> JobSpec:
        req, images, masks, refs = await _multipart(request)
        fields = _fields(req, state, references=True, controlnets=True)
        mask_id = fields.pop("mask_id", None)
        if mask_id is not None and masks:
            raise field_error("mask_id", "send a `mask` file or a mask_id, not both")
        check_prompts(state.settings.limits, req.prompt, req.negative_prompt)
        specs.check_mask_count(op, len(images), len(masks) + (mask_id is not None))
        entry = ops.resolve_model(state, fields.get("model"))  # a 404 before anything is stored
        controlnet.resolve_controlnets(state, entry, req.controlnets)  # so are bad ControlNets
        stored = []
        for i, data in enumerate(images):
            name = "image" if len(images) == 1 else f"image[{i}]"
            path, checked = await store_image(state, data, name, owner)
            stored.append((path, (checked.width, checked.height)))
        if mask_id is not None:
            masks = [await chain.mask_from_id(state, mask_id, owner, stored[0][1])]
        mask_paths = [(await store_image(state, m, "mask", owner))[0] for m in masks]
        spec = specs.img2img_spec(state, fields, stored, mask_paths, op)
        spec = await controlnet.attach(state, entry, spec, req.controlnets, owner)
        await caches.attach(state, spec, req, owner)
        return await _with_references(state, spec, req, refs, owner)

    return build


async def _hires(request: Request, state: AppState, owner: str | None) -> JobSpec:
    req = await _json(request, HiresRequest)
    spec = specs.hires_spec(state, _fields(req, state))
    await caches.attach(state, spec, req, owner)
    return spec


async def _generate_latents(request: Request, state: AppState, owner: str | None) -> JobSpec:
    req = await _json(request, LatentsRequest)
    fields = _fields(req, state, controlnets=True)
    fields["latent_format"] = req.latent_format or format_for(request.headers.get("accept"))
    entry = ops.resolve_model(state, fields["model"])
    specs.check_latent_model(entry)
    spec = ops.txt2img_spec(state, **fields)
    spec = await controlnet.attach(state, entry, spec, req.controlnets, owner)
    await caches.attach(state, spec, req, owner)
    return spec


async def _uploaded_latents(
    request: Request, state: AppState, owner: str | None
) -> tuple[Any, dict[str, Any], str]:
    """Check the latents in the request body, store them; (path, metadata, input format)."""
    blob = await request.body()
    meta = await inputs.check_latents(blob)
    specs.check_latent_size(state, meta["latent_width"], meta["latent_height"])
    fmt = meta.pop("input_format")
    return await inputs.store_latents(state, blob, owner), meta, fmt


async def _decode_latents(request: Request, state: AppState, owner: str | None) -> JobSpec:
    model = request.query_params.get("model")
    path, meta, _ = await _uploaded_latents(request, state, owner)
    return specs.decode_latents_spec(state, model, path, meta)


async def _encode_latents(request: Request, state: AppState, owner: str | None) -> JobSpec:
    query = request.query_params
    fmt = query.get("format") or format_for(request.headers.get("accept"))
    if fmt not in ("fxlt", "safetensors"):
        raise field_error("format", f"must be fxlt or safetensors, got {fmt!r}")
    ops.resolve_model(state, query.get("model"))
    path, checked = await store_image(state, await request.body(), "image", owner)
    size = (checked.width, checked.height)
    return specs.encode_latents_spec(state, query.get("model"), path, size, fmt)


async def _hires_latents(request: Request, state: AppState, owner: str | None) -> JobSpec:
    query = dict(request.query_params)
    for alias in ("width", "height"):  # FoxBurrow names the target hires_width/hires_height
        if f"hires_{alias}" in query:
            query.setdefault(alias, query.pop(f"hires_{alias}"))
    req = _validate(LatentsHiresQuery, query, text=True)
    path, meta, fmt = await _uploaded_latents(request, state, owner)
    fields = _fields(req, state)
    fields["latent_format"] = req.latent_format or (
        "fxlt" if "x-fox-latent" in request.headers.get("accept", "") else fmt
    )
    fields.setdefault("model", None)
    fields["model"] = fields["model"] or meta.get("model")
    size = (meta["latent_width"], meta["latent_height"])
    spec = specs.hires_spec(state, fields, latents=(path, size), latent_meta=meta)
    await caches.attach(state, spec, req, owner)
    return spec


def _add(
    path: str, build: Builder, summary: str, body: dict[str, Any], result: docs.Responses
) -> None:
    add_job_routes(router, path, build, summary, body, result)


_IMAGES = docs.multipart_body(
    {
        "image": "the input image(s): PNG, JPEG or WebP",
        "mask": "inpaint: white = repaint",
        "reference": "reference image(s) for the IP-Adapter (`ip_adapter` in params: name, scale)",
    },
    {"params": {"type": "string", "description": "JSON object: the Img2ImgRequest fields"}},
    required=["image"],
    many=True,
)
_LATENTS = "latents: safetensors (tensor `latents`) or FXLT"
_MODEL = {"model": {"type": "string"}}
_FORMAT = {"format": {"type": "string", "enum": ["fxlt", "safetensors"]}}

_add("img2img", _image_builder("img2img"), "img2img: multipart `image` (1+) and `params` JSON",
     _IMAGES, docs.images())  # fmt: skip
_add("inpaint", _image_builder("inpaint"), "inpaint: multipart `image`, `mask` (white = repaint)",
     _IMAGES, docs.images())  # fmt: skip
_add("generate-hires", _hires, "hi-res fix: base pass, upscale, second pass",
     docs.json_body(HiresRequest, docs.HIRES), docs.images())  # fmt: skip
_add("generate-latents", _generate_latents, "txt2img returning latents (safetensors or FXLT)",
     docs.json_body(LatentsRequest, docs.TXT2IMG), docs.latents())  # fmt: skip
_add("decode-latents", _decode_latents, "latents (body) -> image; ?model= overrides",
     docs.merge(docs.raw_body("application/octet-stream", *docs.LATENT_TYPES,
                              description=_LATENTS), docs.query_params(**_MODEL)),
     docs.images())  # fmt: skip
_add("encode-latents", _encode_latents, "image (body) -> latents; ?model=, ?format=",
     docs.merge(docs.raw_body(*docs.IMAGE_TYPES, "application/octet-stream",
                              description="the image: PNG, JPEG or WebP"),
                docs.query_params(**_MODEL, **_FORMAT)),
     docs.latents())  # fmt: skip
_add("hires-latents", _hires_latents, "latents in, hi-res latents out; params in the query",
     docs.merge(docs.raw_body("application/octet-stream", *docs.LATENT_TYPES,
                              description=_LATENTS), docs.query_params(LatentsHiresQuery)),
     docs.latents())  # fmt: skip

_add("enhance", enhance.build, enhance.SUMMARY, enhance.BODY, docs.images())


@router.get("/lora-list", responses=docs.native(*docs.AUTH))
async def lora_list(state: State, caller: Caller) -> list[dict[str, Any]]:
    return [
        {
            "name": lora.name,
            "path": visibility.shown_path(state, lora.path, caller),
            "fingerprint": state.registry.fingerprint(lora),
            "size_bytes": lora.size_bytes,
            "architecture": lora.architecture,
            "trigger_words": list(lora.trigger_words),
        }
        for lora in state.registry.loras()
    ]


@router.get("/ip-adapter-list", responses=docs.native(*docs.AUTH))
async def ip_adapter_list(state: State, caller: Caller) -> list[dict[str, Any]]:
    """Installed IP-Adapters; `default` marks the one a request naming none gets on a
    model of its architecture."""
    listed = []
    for adapter in state.registry.ip_adapters():
        default = state.registry.ip_adapter(adapter.architecture or "")
        listed.append({
            **references.describe(adapter),
            "path": visibility.shown_path(state, adapter.path, caller),
            "default": default is not None and default.name == adapter.name,
        })  # fmt: skip
    return listed


@router.get("/controlnet-list", responses=docs.native(*docs.AUTH))
async def controlnet_list(state: State, caller: Caller) -> list[dict[str, Any]]:
    """ControlNets under models/controlnet/: names for a request's `controlnets[i].model`."""
    return [
        {
            "name": cn.name,
            "path": visibility.shown_path(state, cn.path, caller),
            "architecture": cn.architecture,
            "union": cn.union,
            "size_bytes": cn.size_bytes,
        }
        for cn in state.registry.controlnets()
    ]


@router.post("/rescan-loras", responses=docs.native(*docs.SCOPED))
async def rescan_loras(state: State, caller: Caller) -> dict[str, int]:
    caller.require("admin")
    result = await asyncio.to_thread(state.registry.scan_loras)
    return result.__dict__
