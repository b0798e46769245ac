"""POST /api/enhance and /api/enqueue/enhance (FoxBurrow): upscale, then img2img.

Multipart: `image` (PNG, JPEG, WebP), `params` (JSON: EnhanceRequest) and optionally
`latent_data` (or `cached_latents`): the image's latents, safetensors or FXLT. With
latents the image is optional: when sent it is checked (it must be an image) but the
latents are what is enhanced, and the input size is theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import Field

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.diffusion import caches, inputs, specs
from pixelpool.api.errors import field_error
from pixelpool.api.native import GenerateRequest
from pixelpool.api.state import AppState
from pixelpool.api.uploads import store_image
from pixelpool.api.validation import Name, Prompt, check_prompts
from pixelpool.families.diffusion import clip_cache
from pixelpool.families.diffusion.latent_format import encode_latents
from pixelpool.families.diffusion.params import EnhanceParams
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.entry import ModelEntry

LANCZOS = "lanczos"
LATENT_FIELDS = ("latent_data", "cached_latents")
# FoxBurrow's and A1111's names for the same fields
ALIASES = {"cfg": "cfg_scale", "width": "hires_width", "height": "hires_height",
           "steps": "hires_steps", "strength": "denoising_strength"}  # fmt: skip


class EnhanceRequest(GenerateRequest):
    """The `params` JSON of /api/enhance. `cfg`, `width`, `height`, `steps` and `strength`
    are accepted for cfg_scale, hires_width, hires_height, hires_steps, denoising_strength."""

    prompt: Prompt = ""
    hires_width: int | None = Field(None, description="target; 0 or absent: 2x the input")
    hires_height: int | None = Field(None, description="target; 0 or absent: 2x the input")
    hires_steps: int | None = Field(None, description="steps the img2img pass runs; default 15")
    denoising_strength: float | None = Field(None, ge=0, le=1, description="default 0.33")
    upscaler: Name | None = Field(
        None, description="an upscale model, or 'lanczos'; default: the first installed"
    )
    cached_latents: dict[str, Any] | None = Field(
        None,
        description="FoxBurrow: {dtype, shape: [1, 4, h, w]} of the raw tensor bytes sent as "
        "the `latent_data` part (as a `latent_cache` WebSocket message gives them)",
    )


def _raw_latents(meta: dict[str, Any], data: bytes) -> bytes:
    """FoxBurrow's raw latents as the safetensors the latent path reads."""
    array = clip_cache.parse_cached_latents(meta, data)
    return encode_latents(array, {}, "safetensors")


def _aliased(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for alias, name in ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            if out.get(name) is None:
                out[name] = value
    return out


def _upscaler_ref(entry: ModelEntry) -> dict[str, Any]:
    key = f"{entry.path}:{entry.size_bytes}:{entry.mtime_ns}"  # changes with the file
    return {"name": entry.name, "path": str(entry.path), "key": key,
            "size_bytes": entry.size_bytes}  # fmt: skip


def resolve_upscaler(state: AppState, name: str | None) -> dict[str, Any] | None:
    """The upscale model `name` names (404 unknown, 422 another family's); None: Lanczos.
    Not named: the first installed upscale model, else Lanczos."""
    if name is None:
        installed = [e for e in state.registry.entries() if e.family == "upscale"]
        return _upscaler_ref(installed[0]) if installed else None
    if name.strip().lower() == LANCZOS:
        return None
    return _upscaler_ref(ops.resolve_model(state, name, "upscaler", family="upscale"))


def _target(state: AppState, req: EnhanceRequest, size: tuple[int, int]) -> tuple[int, int]:
    """hires_width x hires_height; 0 or absent: twice the input, rounded to a multiple of 8."""
    out = []
    for field, given, side in (("hires_width", req.hires_width, size[0]),
                               ("hires_height", req.hires_height, size[1])):  # fmt: skip
        value = given or max(8, round(2 * side / 8) * 8)
        if not given and value > state.settings.limits.max_size:
            raise field_error(field, f"the default, twice the input ({value}), is over "
                              f"limits.max_size ({state.settings.limits.max_size}); "
                              f"send a smaller {field}")  # fmt: skip
        ops.check_size(state, field, value)
        out.append(value)
    return out[0], out[1]


def _one(files: dict[str, list[bytes]], names: tuple[str, ...]) -> bytes | None:
    sent = [(name, blob) for name in names for blob in files[name]]
    if len(sent) > 1:
        raise field_error(sent[1][0], f"send one {' or '.join(names)}, got {len(sent)}")
    return sent[0][1] if sent else None


async def build(request: Request, state: AppState, owner: str | None) -> JobSpec:
    params, files = await inputs.read_multipart(request, ("image", *LATENT_FIELDS))
    req: EnhanceRequest = inputs.validate(EnhanceRequest, _aliased(params))
    request_fields = inputs.request_fields(req, state)
    check_prompts(state.settings.limits, req.prompt, req.negative_prompt)
    if req.subseed_strength:
        raise field_error("subseed_strength", "variation seeds are not supported for enhance")
    image, latents = _one(files, ("image",)), _one(files, LATENT_FIELDS)
    latent_field = next((n for n in LATENT_FIELDS if files[n]), LATENT_FIELDS[0])
    if req.cached_latents is not None:
        try:
            latents = await asyncio.to_thread(_raw_latents, req.cached_latents, latents or b"")
        except clip_cache.CacheError as exc:
            raise field_error(exc.field, exc.message) from exc
    if image is None and latents is None:
        raise field_error("image", "is required: send an image file (or `latent_data`)")
    meta = await inputs.check_latents(latents, latent_field) if latents is not None else {}
    entry = ops.resolve_model(state, request_fields["model"] or meta.get("model"))  # 404 first
    upscaler = resolve_upscaler(state, req.upscaler)
    strength = 0.33 if req.denoising_strength is None else req.denoising_strength
    if strength <= 0:
        raise field_error("denoising_strength", "must be above 0 (0 would change nothing)")
    hires_steps = 15 if req.hires_steps is None else req.hires_steps
    if not 1 <= hires_steps <= state.settings.limits.max_steps:
        raise field_error("hires_steps", f"must be between 1 and {state.settings.limits.max_steps}")

    fields: dict[str, Any] = {}
    size: tuple[int, int] | None = None
    if image is not None:
        path, checked = await store_image(state, image, "image", owner)
        size = (checked.width, checked.height)
        fields.update(image=str(path), image_width=checked.width, image_height=checked.height)
    if latents is not None:
        specs.check_latent_model(entry)
        specs.check_latent_architecture(entry, meta)
        specs.check_latent_size(state, meta["latent_width"], meta["latent_height"])
        size = (meta["latent_width"], meta["latent_height"])
        fields["latents"] = str(await inputs.store_latents(state, latents, owner))
        upscaler = None  # the latent path upscales the latents
    assert size is not None
    width, height = _target(state, req, size)
    sampling = {**request_fields, "width": width, "height": height, "steps": hires_steps}
    fields.update(ops.sampling_fields(state, entry, specs.sampling_request(sampling)))
    fields.update(strength=strength, upscaler=upscaler)
    priority, output_format = specs.job_options(request_fields)
    spec = ops.build_spec("enhance", entry, EnhanceParams, fields, priority, output_format)
    await caches.attach(state, spec, req, owner)
    return spec


BODY = docs.multipart_body(
    {
        "image": "the input image: PNG, JPEG or WebP (optional when latents are sent)",
        "latent_data": "optional: the image's latents, safetensors or FXLT "
        "(also accepted as `cached_latents`); raw tensor bytes when the params give "
        "`cached_latents` {dtype, shape}",
        "cached_latents": "the same as `latent_data` (FoxBurrow's older name)",
    },
    {"params": {"type": "string", "description": "JSON object: the EnhanceRequest fields"}},
    required=[],
)
SUMMARY = "enhance: upscale, then img2img at denoising_strength; multipart `image`, `params`"
