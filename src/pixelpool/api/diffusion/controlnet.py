"""ControlNets of a request: resolved, their control images checked and stored.

Each `controlnets[i]` names a ControlNet (or, without `model`, takes the i-th default
of the model's manifest) and brings a control image as base64 (a data URL too) of
the output's size. The image is checked off the event loop and stored; the job
carries its path and the worker runs the preprocessor. Every error names its field,
e.g. `controlnets[0].image`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationError

from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.uploads import CheckedImage, check_image, max_input_pixels
from pixelpool.api.validation import Name, RequestModel, validation_error
from pixelpool.families import vision
from pixelpool.families.diffusion.params import OP_PARAMS
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.controlnets import ControlNetEntry, ControlNetNotFound
from pixelpool.registry.entry import ModelEntry

MAX_CONTROLNETS = 4
PREPROCESSORS = ("none", "canny", "depth")
# a union ControlNet's control types, in xinsir's (and the A1111 extension's) order
UNION_TYPES = ("openpose", "depth", "softedge", "canny", "normal", "segmentation", "tile",
               "inpaint")  # fmt: skip
UNION_ALIASES = {"scribble": 2, "hed": 2, "soft edge": 2, "lineart": 3, "mlsd": 3,
                 "hardedge": 3, "hard edge": 3, "normalmap": 4, "normal map": 4,
                 "segment": 5, "seg": 5, "blur": 6, "repaint": 7}  # fmt: skip
OPS = ("txt2img", "img2img", "inpaint")
_URLSAFE = str.maketrans("-_", "+/")
Fit = Callable[[int, CheckedImage, tuple[int, int]], CheckedImage]


class ControlNetRequest(RequestModel):
    """One ControlNet of a request; see GET /api/controlnet-list for the names."""

    model: Name | None = Field(None, description="absent: the model manifest's i-th default")
    image: str = Field(description="the control image: base64 or a data URL, output-sized")
    conditioning_scale: float | None = Field(None, description="default 1.0")
    guidance_start: float | None = Field(None, description="fraction of steps; default 0")
    guidance_end: float | None = Field(None, description="fraction of steps; default 1")
    preprocessor: str | None = Field(None, description="none (default), canny or depth")
    canny_low: int | None = Field(None, ge=0, le=255, description="default 100")
    canny_high: int | None = Field(None, ge=0, le=255, description="default 200")
    control_mode: int | str | None = Field(
        None, description="union ControlNets: the control type, a number or a name "
        "(openpose, depth, softedge, canny, normal, segmentation, tile, inpaint); default: "
        "from the preprocessor (canny, depth)",
    )  # fmt: skip


def decode_base64(field: str, text: str) -> bytes:
    """Base64 (standard or URL-safe, optionally a data URL) -> bytes; 422 naming `field`."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise field_error(field, "a data URL must be base64 (data:image/png;base64,...)")
    cleaned = "".join(text.split()).translate(_URLSAFE)
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise field_error(field, "is not valid base64") from exc


def _check(text: str, field: str, max_pixels: int) -> CheckedImage:
    """Blocking: base64 -> a checked image (decoded within the pixel limit)."""
    return check_image(decode_base64(field, text), field, max_pixels)


def _settings(entry: ModelEntry, i: int, req: ControlNetRequest) -> dict[str, Any]:
    """The request's values over the manifest's i-th default (for an entry with no model)."""
    given = req.model_dump(exclude_none=True, exclude={"image"})
    if req.model is not None:
        return given
    defaults = entry.manifest.controlnets if entry.manifest is not None else ()
    if i >= len(defaults):
        message = (f"is required: model {entry.name!r} names {len(defaults)} default "
                   "ControlNet(s) in its manifest")  # fmt: skip
        raise field_error(f"controlnets[{i}].model", message)
    return {**defaults[i].model_dump(exclude_none=True), **given}


def _depth_model(state: AppState, field: str) -> str:
    for entry in state.registry.entries():
        if entry.family == "vision" and vision.task_of(entry.architecture) == "depth":
            return str(entry.path)
    raise field_error(field, "depth needs a Depth Anything model: install one under "
                      "models/vision/ (e.g. Depth-Anything-V2-Small-hf), or send a depth map "
                      "with preprocessor none")  # fmt: skip


def resolve_controlnets(
    state: AppState, entry: ModelEntry, requested: list[ControlNetRequest]
) -> list[dict[str, Any]]:
    """ControlNetRef fields (image left out) per entry: 404 unknown, 422 for another
    architecture or a bad setting. Runs before anything is stored."""
    if len(requested) > MAX_CONTROLNETS:
        raise field_error("controlnets", f"at most {MAX_CONTROLNETS} ControlNets per request")
    refs = []
    for i, req in enumerate(requested):
        at = f"controlnets[{i}]"
        settings = _settings(entry, i, req)
        name = settings.pop("model")
        ops.check_text_field(f"{at}.model", name)
        try:
            found = state.registry.resolve_controlnet(name)
        except ControlNetNotFound as exc:
            raise ApiError(404, f"{at}.model: ControlNet not found: {exc.name}",
                           f"{at}.model") from exc  # fmt: skip
        if found.architecture != entry.architecture:
            raise field_error(f"{at}.model", f"ControlNet {found.name!r} is for "
                              f"{found.architecture}, but model {entry.name!r} is "
                              f"{entry.architecture}")  # fmt: skip
        preprocessor = settings.get("preprocessor", "none")
        if preprocessor not in PREPROCESSORS:
            raise field_error(f"{at}.preprocessor", f"unknown preprocessor {preprocessor!r}; "
                              f"valid: {', '.join(PREPROCESSORS)}")  # fmt: skip
        if preprocessor == "depth":
            settings["depth_model"] = _depth_model(state, f"{at}.preprocessor")
        for key, low, high in (("conditioning_scale", 0, 10), ("guidance_start", 0, 1),
                               ("guidance_end", 0, 1)):  # fmt: skip
            value = settings.get(key)
            if value is not None and not low <= value <= high:
                raise field_error(f"{at}.{key}", f"must be between {low} and {high}")
        if settings.get("guidance_start", 0.0) >= settings.get("guidance_end", 1.0):
            raise field_error(f"{at}.guidance_start", "must be below guidance_end")
        settings["control_mode"] = _control_mode(found, settings, at)
        refs.append({**found.to_ref(), **settings})
    unions = [i for i, ref in enumerate(refs) if ref["union"]]
    if unions and len(refs) > 1:
        raise field_error(f"controlnets[{unions[0]}].model",
                          "a union ControlNet goes alone: one ControlNet per request")  # fmt: skip
    return refs


def _control_mode(found: ControlNetEntry, settings: dict[str, Any], at: str) -> int | None:
    """A union ControlNet's control type: given (number or name), else the preprocessor's."""
    value = settings.get("control_mode")
    if not found.union:
        if value is not None:
            raise field_error(f"{at}.control_mode", f"{found.name!r} is not a union ControlNet")
        return None
    if value is None:
        value = {"canny": 3, "depth": 1}.get(settings.get("preprocessor", "none"))
        if value is None:
            raise field_error(f"{at}.control_mode", f"is required: {found.name!r} is a union "
                              f"ControlNet; one of {', '.join(UNION_TYPES)}")  # fmt: skip
    if isinstance(value, str):
        name = value.strip().lower().replace("_", " ")
        index = UNION_ALIASES.get(name, UNION_TYPES.index(name) if name in UNION_TYPES else None)
        if index is None:
            raise field_error(f"{at}.control_mode", f"unknown control type {value!r}; valid: "
                              f"{', '.join(UNION_TYPES)} or a number")  # fmt: skip
        value = index
    if not 0 <= value < found.control_types:
        raise field_error(f"{at}.control_mode", f"must be between 0 and "
                          f"{found.control_types - 1} for {found.name!r}")  # fmt: skip
    return value


async def attach(
    state: AppState,
    entry: ModelEntry,
    spec: JobSpec,
    requested: list[ControlNetRequest],
    owner: str | None,
    fit: Fit | None = None,
) -> JobSpec:
    """Add the request's ControlNets to a built spec: resolve, store the control images
    (each must be the output's size; with `fit`, a blocking `fit(i, image, size)` makes
    it so, as the A1111 dialect does), re-validate the params and the batch key."""
    if not requested:
        return spec
    if spec.op not in OPS:
        raise field_error("controlnets", f"not supported for {spec.op}")
    refs = resolve_controlnets(state, entry, requested)
    size = (spec.params["width"], spec.params["height"])
    checks = []
    for i, req in enumerate(requested):
        field = f"controlnets[{i}].image"
        checked = await asyncio.to_thread(_check, req.image, field, max_input_pixels(state))
        if fit is not None and (checked.width, checked.height) != size:
            checked = await asyncio.to_thread(fit, i, checked, size)
        if (checked.width, checked.height) != size:
            raise field_error(field, f"is {checked.width}x{checked.height}; a control image "
                              f"must be the output's size, {size[0]}x{size[1]}")  # fmt: skip
        checks.append(checked)
    for ref, checked in zip(refs, checks, strict=True):  # stored only once all are good
        art = await state.jobs.artifacts.put(checked.data, checked.media_type, owner)
        ref["image"] = str(art.path)
    try:
        params = OP_PARAMS[spec.op](**{**spec.params, "controlnets": refs})
    except ValidationError as exc:
        raise validation_error(exc) from exc
    spec.params = params.model_dump()
    spec.batch_key = list(params.batch_key())
    return spec
