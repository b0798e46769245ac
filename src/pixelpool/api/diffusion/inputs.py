"""Reading a diffusion request's inputs: `params` JSON, multipart files, uploaded latents.

Shared by img2img/inpaint, the latent routes and enhance, so every route checks its
uploads the same way and names the field of anything wrong.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.native import API_ONLY
from pixelpool.api.ops import infotext_model
from pixelpool.api.state import AppState
from pixelpool.api.uploads import store_blob
from pixelpool.api.validation import parse_json, validate_form
from pixelpool.families.diffusion.latent_format import LatentFormatError, as_batch, decode_latents

MAX_UPLOADS = 16
LATENT_CHANNELS = 4


def validate(model: type[BaseModel], data: Any, text: bool = False) -> Any:
    """`data` as `model`: strict for JSON, numbers parsed from text for query parameters."""
    try:
        return validate_form(model, data) if text else model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def request_fields(
    req: BaseModel,
    state: AppState | None = None,
    references: bool = False,
    controlnets: bool = False,
) -> dict[str, Any]:
    """A request's fields for a spec builder, without those that only the API reads; with
    `state`, `model` is resolved as an infotext names it (by hash if not by name).

    `ip_adapter` and `controlnets` are left out too: the routes that take them read them
    and attach them to the built spec; the others refuse them rather than ignore them."""
    if getattr(req, "regional_prompting", False):
        raise field_error("regional_prompting", "not supported")
    if not references and getattr(req, "ip_adapter", None) is not None:
        raise field_error("ip_adapter", "reference images work with generate, img2img, inpaint")
    if getattr(req, "controlnets", None) and not controlnets:
        raise field_error("controlnets", "not supported for this operation")
    skip = API_ONLY | {"cached_latents", "ip_adapter", "controlnets"}
    fields = req.model_dump(exclude=skip)
    if state is not None and "model" in fields:
        fields["model"] = infotext_model(state, fields["model"], getattr(req, "model_hash", None))
    return fields


async def read_multipart(
    request: Request, files: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """The `params` JSON object and the uploads named `files` of a multipart request."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise field_error(files[0], f"send multipart/form-data with `{files[0]}` and `params`")
    try:
        form = await request.form(max_files=MAX_UPLOADS, max_fields=MAX_UPLOADS)
    except Exception as exc:  # Starlette raises several parser errors
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    raw = form.get("params") or "{}"
    params = parse_json(raw if isinstance(raw, str) else await raw.read(), "params", 422)
    if not isinstance(params, dict):
        raise field_error("params", "must be a JSON object")
    uploads: dict[str, list[bytes]] = {}
    for name in files:
        values = form.getlist(name)
        if any(not isinstance(v, UploadFile) for v in values):
            raise field_error(name, "must be a file upload, not a text field")
        uploads[name] = [await v.read() for v in values if isinstance(v, UploadFile)]
    return params, uploads


async def check_latents(blob: bytes, field: str = "latents") -> dict[str, Any]:
    """Decode uploaded latents (safetensors or FXLT) off the event loop: one image of
    LATENT_CHANNELS channels. Returns their metadata plus the pixel size they decode to
    (`latent_width`, `latent_height`) and the format they came in (`input_format`)."""
    try:
        array, meta = await asyncio.to_thread(decode_latents, blob)
        array = as_batch(array, LATENT_CHANNELS)
    except LatentFormatError as exc:
        raise field_error(field, str(exc)) from exc
    if array.shape[0] != 1:
        raise field_error(field, f"send one latent image, got a batch of {array.shape[0]}")
    meta["latent_width"], meta["latent_height"] = array.shape[3] * 8, array.shape[2] * 8
    meta["input_format"] = "fxlt" if blob[:4] == b"FXLT" else "safetensors"
    return meta


async def store_latents(state: AppState, blob: bytes, owner: str | None) -> Path:
    return await store_blob(state, blob, "application/octet-stream", owner)
