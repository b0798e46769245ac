"""`POST /sdapi/v1/txt2img` and `/img2img`: A1111 fields -> our txt2img, hires, img2img
and inpaint jobs (batch_size * n_iter of them, seeds seed, seed+1, ...)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import time
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.a1111 import controlnet, running
from pixelpool.api.a1111.errors import responses
from pixelpool.api.a1111.models import Img2ImgRequest, Txt2ImgRequest
from pixelpool.api.auth import Caller
from pixelpool.api.diffusion.specs import hires_spec, img2img_spec
from pixelpool.api.errors import field_error
from pixelpool.api.runs import (
    Output,
    b64,
    build_specs,
    cancel_all,
    check_count,
    read_output,
    submit_all,
)
from pixelpool.api.selfhosted import State
from pixelpool.api.uploads import store_image
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.families.diffusion.params import resolve_seed
from pixelpool.jobs.spec import JobSpec, JobStatus

router = APIRouter(tags=["AUTOMATIC1111"])
MODEL_FIELD = "override_settings.sd_model_checkpoint"
NAMES = {
    "sampler": "sampler_name", "model": MODEL_FIELD, "strength": "denoising_strength",
    "hires_steps": "hr_second_pass_steps", "hires_denoising_strength": "denoising_strength",
    "base_width": "width", "base_height": "height", "subseed": "subseed",
}  # fmt: skip
MAX_HR_SCALE = 4  # as A1111's slider
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")


def model_name(title: Any) -> str | None:
    """A1111 names a checkpoint by its title, `name [hash]`: the name part."""
    if title is None or title == "":
        return None
    if not isinstance(title, str):
        raise field_error(MODEL_FIELD, "must be a string")
    return _TITLE_HASH.sub("", title)


def _common(req: Txt2ImgRequest) -> dict[str, Any]:
    settings = req.override_settings or {}
    scheduler = req.scheduler if (req.scheduler or "").lower() not in ("", "automatic") else None
    return {
        "model": model_name(settings.get("sd_model_checkpoint")),
        "prompt": req.prompt, "negative_prompt": req.negative_prompt,
        "width": req.width or None, "height": req.height or None, "steps": req.steps,
        "cfg_scale": req.cfg_scale, "sampler": req.sampler_name or req.sampler_index,
        "scheduler": scheduler,
        "subseed": None if req.subseed == -1 else req.subseed,
        "subseed_strength": req.subseed_strength or None,
    }  # fmt: skip


def _floor8(value: float) -> int:
    return max(8, int(value) // 8 * 8)


def _hires(req: Txt2ImgRequest, fields: dict[str, Any]) -> dict[str, Any]:
    """enable_hr: width x height is the first pass; hr_scale or hr_resize_x/y the target."""
    if not 1 <= req.hr_scale <= MAX_HR_SCALE:
        raise field_error("hr_scale", f"must be between 1 and {MAX_HR_SCALE}")
    base_w, base_h = req.width or 512, req.height or 512
    target_w = req.hr_resize_x or _floor8(base_w * req.hr_scale)
    target_h = req.hr_resize_y or _floor8(base_h * req.hr_scale)
    upscaler = "latent" if (req.hr_upscaler or "Latent").startswith("Latent") else "pixel"
    return {
        **fields, "width": target_w, "height": target_h, "base_width": base_w,
        "base_height": base_h, "hires_steps": req.hr_second_pass_steps or req.steps,
        "hires_denoising_strength": req.denoising_strength, "hires_upscaler": upscaler,
    }  # fmt: skip


def decode_image(value: Any, field: str) -> bytes:
    """Base64 image data, bare or as a `data:` URL."""
    if not isinstance(value, str) or not value:
        raise field_error(field, "must be a base64 image")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise field_error(field, "is not valid base64") from exc


async def _run(
    state: State, request: Request, specs: list[JobSpec], owner: str | None
) -> list[Output]:
    """Like `run_images`, but an interrupted job is left out rather than an error (A1111
    returns what it made before `/interrupt`)."""
    records = await submit_all(state, specs, owner)
    try:
        with running.tracked(request, owner, [r.id for r in records]):
            done = await asyncio.gather(*(wait_or_cancel(state, request, r.id) for r in records))
    except BaseException:
        await cancel_all(state, records)
        raise
    return [await read_output(state, r) for r in done if r.status is not JobStatus.cancelled]


def _infotext(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        return str(img.info.get("parameters", ""))


def _response(req: Txt2ImgRequest, specs: list[JobSpec], outputs: list[Output]) -> dict[str, Any]:
    first = specs[0]
    params = first.params
    seeds = [o.seed for o in outputs] or [int(params.get("seed") or 0)]
    subseeds = [int(s.params.get("subseed") or -1) for s in specs]
    prompts = [str(s.params.get("prompt", "")) for s in specs]
    info = {
        "prompt": req.prompt, "all_prompts": prompts,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * len(specs),
        "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0], "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength, "width": params["width"],
        "height": params["height"], "sampler_name": params.get("sampler"),
        "scheduler": params.get("scheduler"), "cfg_scale": params["cfg_scale"],
        "steps": params["steps"], "batch_size": req.batch_size,
        "sd_model_name": first.model["name"], "denoising_strength": req.denoising_strength,
        "infotexts": [_infotext(o.data) for o in outputs],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "interrupted": len(outputs) < len(specs),
    }  # fmt: skip
    images = [b64(o.data) for o in outputs] if req.send_images else []
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest):  # A1111 does not echo the images back
        parameters.update(init_images=None, mask=None)
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _count(state: State, req: Txt2ImgRequest) -> int:
    """batch_size * n_iter images (a random seed, -1, is picked once, then +1 per image)."""
    for field in ("batch_size", "n_iter"):
        if getattr(req, field) < 1:
            raise field_error(field, "must be at least 1")
    return check_count(state, req.batch_size * req.n_iter, "batch_size")


@router.post("/sdapi/v1/txt2img", responses=responses(*docs.SYNC, 500))
async def txt2img(req: Txt2ImgRequest, request: Request, state: State, caller: Caller) -> Any:
    """Text to image; with `enable_hr`, our hi-res fix (Latent upscalers: latent, else pixel)."""
    caller.require("generate")
    fields = _common(req)
    units = controlnet.parse(req.alwayson_scripts)
    if units and req.enable_hr:
        raise field_error(controlnet.FIELD, "ControlNet units do not work with enable_hr here")
    if req.enable_hr:
        fields = _hires(req, fields)

        def build(seed: int | None) -> JobSpec:
            return hires_spec(state, {**fields, "seed": seed})
    else:

        def build(seed: int | None) -> JobSpec:
            return ops.txt2img_spec(state, **fields, seed=seed)

    specs = build_specs(build, resolve_seed(req.seed), _count(state, req), NAMES)
    specs = await controlnet.attach(state, specs, units, fields["model"], caller.owner)
    outputs = await _run(state, request, specs, caller.owner)
    return _response(req, specs, outputs)


@router.post("/sdapi/v1/img2img", responses=responses(*docs.SYNC, 500))
async def img2img(req: Img2ImgRequest, request: Request, state: State, caller: Caller) -> Any:
    """init_images[0] (and `mask`: inpaint) with the txt2img fields; see docs for ignored ones."""
    caller.require("generate")
    if not req.init_images:
        raise field_error("init_images", "is required: send one base64 image")
    n = _count(state, req)
    fields = {**_common(req), "strength": req.denoising_strength}
    units = controlnet.parse(req.alwayson_scripts, init=req.init_images[0])
    image = await store_image(state, decode_image(req.init_images[0], "init_images"),
                              "init_images", caller.owner)  # fmt: skip
    images = [(image[0], (image[1].width, image[1].height))]
    masks = []
    if req.mask:
        masks = [
            (await store_image(state, decode_image(req.mask, "mask"), "mask", caller.owner))[0]
        ]
    op = "inpaint" if masks else "img2img"

    def build(seed: int | None) -> JobSpec:
        return img2img_spec(state, {**fields, "seed": seed}, images, masks, op)

    specs = build_specs(build, resolve_seed(req.seed), n, {**NAMES, "image": "init_images"})
    specs = await controlnet.attach(state, specs, units, fields["model"], caller.owner)
    outputs = await _run(state, request, specs, caller.owner)
    return _response(req, specs, outputs)
