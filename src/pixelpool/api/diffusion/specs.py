"""JobSpecs for the diffusion ops beyond txt2img: img2img, inpaint, hi-res fix, latents.

Inputs (images, latents) have already been checked and stored by the caller
(`uploads.py`); these functions resolve defaults and limits and name the field
of anything wrong, so bad input never reaches a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.families.diffusion.latent_format import LATENT_ARCHITECTURES
from pixelpool.families.diffusion.params import (
    DecodeLatentsParams,
    EncodeLatentsParams,
    HiresParams,
    Img2ImgParams,
    default_hires_base,
)
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.entry import ModelEntry

HIRES_MAX_FACTOR = 2  # a hi-res target may be twice the largest plain size (4096 by default)


def _floor8(value: int) -> int:
    return max(8, value // 8 * 8)


def _check_strength(field: str, strength: float, steps: int) -> None:
    if not 0 <= strength <= 1:
        raise field_error(field, f"must be between 0 and 1, got {strength}")
    if int(steps * strength) < 1:
        raise field_error(field, f"{strength} with {steps} steps leaves no step to run")


def check_latent_model(entry: ModelEntry) -> None:
    if entry.architecture not in LATENT_ARCHITECTURES:
        valid = ", ".join(sorted(LATENT_ARCHITECTURES))
        raise field_error("model", f"latent operations support {valid}, not {entry.architecture}")


def check_latent_architecture(entry: ModelEntry, meta: dict[str, Any]) -> None:
    """Latents made by one architecture cannot run on another's model (same channel count)."""
    made_by = meta.get("architecture")
    if made_by not in (None, entry.architecture):
        raise field_error("model", f"the latents are from a {made_by} model, but "
                          f"{entry.name} is {entry.architecture}")  # fmt: skip


def check_latent_size(state: AppState, width: int, height: int) -> None:
    """Uploaded latents decode to width x height pixels: within `limits`, before any work."""
    limits = state.settings.limits
    if not (limits.min_size <= width <= limits.max_size and
            limits.min_size <= height <= limits.max_size):  # fmt: skip
        raise ApiError(
            413 if max(width, height) > limits.max_size else 422,
            f"latents: decode to {width}x{height} pixels; each side must be between "
            f"{limits.min_size} and {limits.max_size} (limits.max_size)",
            "latents",
        )


def check_mask_count(op: str, images: int, masks: int) -> None:
    """Inpaint needs one mask, or one per image; img2img takes none."""
    if images < 1:
        raise field_error("image", "is required: send at least one image file")
    if op == "inpaint" and masks == 0:
        raise field_error("mask", "is required for inpaint")
    if op == "img2img" and masks:
        raise field_error("mask", "img2img takes no mask; use inpaint")
    if masks and masks not in (1, images):
        raise field_error(
            "mask", f"got {masks} masks for {images} images; send one mask, or one per image"
        )


def img2img_spec(
    state: AppState,
    request: dict[str, Any],
    images: list[tuple[Path, tuple[int, int]]],
    masks: list[Path] | None = None,
    op: str = "img2img",
) -> JobSpec:
    """img2img or inpaint: `images` are (stored path, (width, height)) pairs.

    width/height absent or 0 mean the first input's size, rounded down to a multiple of 8.
    """
    masks = masks or []
    check_mask_count(op, len(images), len(masks))
    if request.get("subseed_strength"):
        raise field_error("subseed_strength", f"variation seeds are not supported for {op}")
    entry = ops.resolve_model(state, request.get("model"))
    size = images[0][1]
    request = {**request}
    for key, value in (("width", size[0]), ("height", size[1])):
        if not request.get(key):
            request[key] = _floor8(value)
    fields = ops.sampling_fields(state, entry, sampling_request(request))
    strength = request.get("strength")
    strength = 0.75 if strength is None else float(strength)
    _check_strength("strength", strength, fields["steps"])
    fields.update(images=[str(p) for p, _ in images], masks=[str(m) for m in masks],
                  strength=strength)  # fmt: skip
    return ops.build_spec(op, entry, Img2ImgParams, fields, *job_options(request))


def hires_spec(
    state: AppState,
    request: dict[str, Any],
    latents: tuple[Path, tuple[int, int]] | None = None,
    latent_meta: dict[str, Any] | None = None,
) -> JobSpec:
    """Hi-res fix; with `latents` (stored path, (width, height)) it skips the base pass."""
    entry = ops.resolve_model(state, request.get("model"))
    max_size = HIRES_MAX_FACTOR * state.settings.limits.max_size
    fields = ops.sampling_fields(state, entry, sampling_request(request), max_size=max_size)
    base_w = request.get("base_width") or default_hires_base(fields["width"])
    base_h = request.get("base_height") or default_hires_base(fields["height"])
    if latents is not None:
        check_latent_model(entry)
        check_latent_architecture(entry, latent_meta or {})
        base_w, base_h = latents[1]
        fields["latents"] = str(latents[0])
    for field, value in (("base_width", base_w), ("base_height", base_h)):
        ops.check_size(state, field, value)
    hires_steps = request.get("hires_steps")
    hires_steps = 15 if hires_steps is None else int(hires_steps)
    if not 1 <= hires_steps <= state.settings.limits.max_steps:
        raise field_error("hires_steps", f"must be between 1 and {state.settings.limits.max_steps}")
    strength = request.get("hires_denoising_strength")
    strength = 0.33 if strength is None else float(strength)
    _check_strength("hires_denoising_strength", strength, steps=1000)  # steps scale up
    fields.update(
        base_width=base_w, base_height=base_h, hires_steps=hires_steps,
        hires_denoising_strength=strength,
        hires_upscaler=request.get("hires_upscaler") or "latent",
    )  # fmt: skip
    if request.get("latent_format"):
        check_latent_model(entry)
        fields["latent_format"] = request["latent_format"]
    return ops.build_spec("hires", entry, HiresParams, fields, *job_options(request))


def decode_latents_spec(
    state: AppState, model: str | None, path: Path, meta: dict[str, Any], priority: int = 100
) -> JobSpec:
    """Decode with `model` (a query parameter), else the model named in the metadata."""
    name = model or meta.get("model")
    entry = ops.resolve_model(state, str(name) if name else None)
    check_latent_model(entry)
    check_latent_architecture(entry, meta)
    check_latent_size(state, meta["latent_width"], meta["latent_height"])
    fields = {"latents": str(path), "seed": int(meta.get("seed") or 0)}
    return ops.build_spec("decode_latents", entry, DecodeLatentsParams, fields, priority)


def encode_latents_spec(
    state: AppState,
    model: str | None,
    path: Path,
    size: tuple[int, int],
    latent_format: str,
    priority: int = 100,
) -> JobSpec:
    entry = ops.resolve_model(state, model)
    check_latent_model(entry)
    width, height = _floor8(size[0]), _floor8(size[1])
    for field, value in (("width", width), ("height", height)):
        ops.check_size(state, field, value)
    fields = {"image": str(path), "width": width, "height": height,
              "latent_format": latent_format}  # fmt: skip
    return ops.build_spec("encode_latents", entry, EncodeLatentsParams, fields, priority)


_SAMPLING_KEYS = (
    *("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed"),
    *("sampler", "scheduler", "loras", "subseed", "subseed_strength", "quality"),
)


def sampling_request(request: dict[str, Any]) -> dict[str, Any]:
    return {key: request.get(key) for key in _SAMPLING_KEYS}


def job_options(request: dict[str, Any]) -> tuple[int, str]:
    return int(request.get("priority") or 100), str(request.get("output_format") or "png")
