"""OpenAI image requests -> job specs, and job outputs -> OpenAI's response shape.

A request for n images becomes n specs built by `ops` / `diffusion.specs` (the one
job path). `quality` picks the model's preset (ops.presets). Extension fields
beyond OpenAI's: seed, negative_prompt, steps, guidance_scale, sampler, scheduler,
loras, strength (edits, variations); and FastFusion's: num_inference_steps (steps),
lora_settings (loras), style (accepted, no effect).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.openai.encoding import reencode
from pixelpool.api.openai.transparent import check_transparent
from pixelpool.api.runs import Output, b64, build_specs, check_count
from pixelpool.api.state import AppState
from pixelpool.api.validation import Name, Prompt, RequestModel, parse_json
from pixelpool.jobs.encode import MEDIA_TYPES
from pixelpool.jobs.spec import JobSpec

# Names OpenAI clients send by default; they mean "the server's default model" here
# unless a model of that name is installed.
OPENAI_MODEL_NAMES = frozenset(
    {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"}
)
QUALITY_ALIASES = {"xhigh": "hd", "max": "hd"}  # newer OpenAI names, no preset of their own
FIELD_NAMES = {"width": "size", "height": "size", "cfg_scale": "guidance_scale"}
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
TRANSPARENT_QUALITY = 90  # WebP quality of a transparent result without output_compression


class LoraRef(RequestModel):
    name: Name
    weight: float = Field(1.0, ge=-10, le=10)


class ImageOptions(RequestModel):
    """Fields every image endpoint takes (JSON, strictly typed; or form fields in multipart)."""

    model_config = ConfigDict(populate_by_name=True)

    model: Name | None = None
    n: int | None = Field(None, ge=1)
    size: str | None = Field(None, description="'auto' or WIDTHxHEIGHT (multiples of 8)")
    response_format: Literal["url", "b64_json"] | None = Field(None, description="default b64_json")
    quality: str | None = Field(None, description="a preset: low, medium, high, auto, standard, hd")
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    user: str | None = None
    # Extensions (pixelpool)
    seed: int | None = Field(None, description="0, -1 or absent: random; image i gets seed+i")
    negative_prompt: Prompt | None = None
    steps: int | None = Field(None, description="overrides the quality preset")
    num_inference_steps: int | None = Field(None, description="FastFusion's name for `steps`")
    guidance_scale: float | None = None
    sampler: Name | None = None
    scheduler: Name | None = None
    loras: list[LoraRef] | None = Field(
        None, alias="lora_settings", description="[{name, weight}]; `loras` also works"
    )
    _loras_field: str = PrivateAttr("loras")  # the name the client used, for errors

    @model_validator(mode="wrap")
    @classmethod
    def _remember_loras_name(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict) and "lora_settings" in data:
            model._loras_field = "lora_settings"
        return model

    @field_validator("loras", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        """Multipart sends `loras` as a JSON string."""
        if isinstance(value, str):
            try:
                return parse_json(value, "loras")
            except ApiError as exc:
                raise ValueError(f"must be a JSON list of {{name, weight}} ({exc.detail})") from exc
        return value


class StreamOptions(RequestModel):
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)


class GenerationRequest(ImageOptions, StreamOptions):
    prompt: Prompt = Field(min_length=1)
    moderation: Literal["low", "auto"] | None = Field(None, description="accepted; no effect")
    style: str | None = Field(
        None,
        max_length=100,
        description="accepted (OpenAI's vivid/natural, FastFusion's hint); no effect",
    )
    safety_identifier: str | None = None


class EditRequest(ImageOptions, StreamOptions):
    """Form fields of /v1/images/edits (the image and mask are files)."""

    prompt: Prompt = Field(min_length=1)
    strength: float | None = Field(None, ge=0, le=1, description="default 0.75")
    input_fidelity: Literal["low", "high"] | None = Field(None, description="accepted")
    safety_identifier: str | None = None
    ip_adapter_scale: float | None = Field(
        None, ge=0, le=10, description="pixelpool: with several `image[]` and an IP-Adapter "
        "installed for the model, how strongly the extra images guide the result (0.7)",
    )  # fmt: skip
    mask_id: str | None = Field(
        None,
        description="the mask by id instead of a `mask` file: a segment job "
        "`<job id>[:<image>[:<prompt>[:<instance>]]]` or a mask artifact id (pixelpool)",
    )


class VariationRequest(ImageOptions):
    """Form fields of /v1/images/variations; the prompt is optional (FastFusion)."""

    prompt: Prompt = ""
    strength: float | None = Field(None, ge=0, le=1, description="default 0.75")


@dataclass(frozen=True)
class Plan:
    """A validated request: the specs to run and how to shape the answer."""

    specs: list[JobSpec]
    width: int
    height: int
    output_format: str
    compression: int | None  # re-encode to this quality (the jobs then produce PNG)
    quality: str
    response_format: str
    background: str = "opaque"  # "transparent": each image goes through `cutout_model`
    cutout_model: dict[str, Any] | None = None  # a bgremove model, as a job names it

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size in (None, "", "auto"):
        return None, None
    match = SIZE_PATTERN.match(size)
    if not match:
        raise field_error("size", f"must be 'auto' or WIDTHxHEIGHT such as 512x512, got {size!r}")
    return int(match[1]), int(match[2])


def model_name(state: AppState, name: str | None) -> str | None:
    """An OpenAI model name with no such model installed means the default model."""
    if name in OPENAI_MODEL_NAMES and all(e.name != name for e in state.registry.entries()):
        return None
    return name


def plan_images(
    state: AppState,
    req: ImageOptions,
    prompt: str,
    build: Callable[[dict[str, Any]], JobSpec],
) -> Plan:
    """Check what every image endpoint shares, then build n specs with `build(request)`.

    `build` gets the sampling request as `ops.txt2img_spec` keywords (also what
    `diffusion.specs.img2img_spec` reads), seed included.
    """
    fmt = req.output_format or "png"
    cutout = check_transparent(state, fmt) if req.background == "transparent" else None
    n = check_count(state, req.n)
    if getattr(req, "stream", False) and n > 1:
        raise field_error("n", "a streamed request makes one image; use n=1", 400)
    width, height = parse_size(req.size)
    compression = req.output_compression if fmt != "png" else None
    if cutout is not None and fmt != "png":  # the cut-out is a PNG: re-encode it
        compression = TRANSPARENT_QUALITY if compression is None else compression
    quality = req.quality or "auto"
    request = {
        "prompt": prompt, "negative_prompt": req.negative_prompt,
        "model": model_name(state, req.model), "width": width, "height": height,
        "steps": req.num_inference_steps if req.steps is None else req.steps,
        "cfg_scale": req.guidance_scale, "sampler": req.sampler,
        "scheduler": req.scheduler, "quality": QUALITY_ALIASES.get(quality, quality),
        "loras": [lora.model_dump() for lora in req.loras] if req.loras else None,
        "output_format": "png" if compression is not None else fmt,
    }  # fmt: skip
    if None not in (req.steps, req.num_inference_steps) and req.steps != req.num_inference_steps:
        raise field_error("num_inference_steps", "differs from `steps`; send one of them", 400)
    names = {**FIELD_NAMES, "loras": req._loras_field}
    if req.steps is None and req.num_inference_steps is not None:
        names["steps"] = "num_inference_steps"
    specs = build_specs(lambda seed: build({**request, "seed": seed}), req.seed, n, names)
    params = specs[0].params
    return Plan(
        specs, params["width"], params["height"], fmt, compression, quality,
        req.response_format or "b64_json", "opaque" if cutout is None else "transparent", cutout,
    )  # fmt: skip


async def final_bytes(plan: Plan, out: Output) -> bytes:
    if plan.compression is None:
        return out.data
    return await asyncio.to_thread(reencode, out.data, plan.output_format, plan.compression)


async def image_items(
    state: AppState, request: Request, plan: Plan, outputs: list[Output], owner: str | None
) -> list[dict[str, Any]]:
    """`data` entries: b64_json, or a URL to /v1/images/data/{id} (re-encoded ones stored anew)."""
    items = []
    for out in outputs:
        data = await final_bytes(plan, out)
        item: dict[str, Any] = {"seed": out.seed}
        if plan.response_format == "b64_json":
            item["b64_json"] = b64(data)
        else:
            art_id = out.artifact_id
            if data is not out.data:
                media = MEDIA_TYPES[plan.output_format]
                art_id = (await state.jobs.artifacts.put(data, media, owner)).id
            file_id = f"{art_id}.{plan.output_format}"
            item["url"] = str(request.url_for("openai_image_data", file_id=file_id))
        items.append(item)
    return items


def images_response(plan: Plan, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "created": int(time.time()),
        "data": items,
        "background": plan.background,
        "output_format": plan.output_format,
        "quality": plan.quality,
        "size": plan.size,
    }
