"""How a diffusion model is listed, what a job of it costs, and what its images say."""

from __future__ import annotations

import math
from typing import Any

from pixelpool.families.base import Cost, EntryLike
from pixelpool.families.diffusion.params import NATIVE_SIZE
from pixelpool.families.diffusion.samplers import samplers_for

DEFAULT_STEPS = 25
DEFAULT_CFG = 7.0
# Presets every model has (OpenAI's quality names map here); a manifest may override them.
BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "auto": {},
    "low": {"steps": 12},
    "medium": {"steps": 20},
    "standard": {"steps": 20},
    "high": {"steps": 30},
    "hd": {"steps": 40},
}

# Activation memory grows with pixels x batch and with the model's width, which
# scales roughly with the square root of its size.
ACTIVATION_FACTOR = 0.05  # bytes per pixel per sqrt(model byte); SD 1.5 at 512^2 -> ~0.6 GB
SECONDS_PER_MEGAPIXEL_STEP = 0.05  # a mid-range GPU; only used to order and report


def model_defaults(entry: EntryLike) -> dict[str, Any]:
    """Server defaults overlaid with the model's manifest defaults."""
    native = NATIVE_SIZE[entry.architecture]
    defaults: dict[str, Any] = {"width": native, "height": native, "steps": DEFAULT_STEPS,
                                "cfg_scale": DEFAULT_CFG}  # fmt: skip
    if entry.manifest is not None:
        defaults.update(entry.manifest.model_defaults())
    return defaults


def describe(entry: EntryLike) -> dict[str, Any]:
    manifest = entry.manifest.describe() if entry.manifest is not None else {}
    return {
        "prediction_type": entry.prediction_type,
        "zero_snr": entry.zero_snr,
        "defaults": model_defaults(entry),
        "samplers": samplers_for(entry.architecture),
        **{k: v for k, v in manifest.items() if k != "presets"},
        "presets": {**BUILTIN_PRESETS, **manifest.get("presets", {})},
    }


def estimate_cost(model: dict[str, Any], params: dict[str, Any]) -> Cost:
    model_bytes = int(model.get("size_bytes") or 0)
    pixels = int(params.get("width") or 512) * int(params.get("height") or 512)
    item = int(pixels * ACTIVATION_FACTOR * math.sqrt(max(model_bytes, 1)))
    steps = int(params.get("steps") or 1) + int(params.get("hires_steps") or 0)
    return Cost(model_bytes, item, steps * pixels / 1e6 * SECONDS_PER_MEGAPIXEL_STEP)


_LABELS = {
    "steps": "Steps", "sampler": "Sampler", "scheduler": "Schedule type",
    "cfg_scale": "CFG scale", "seed": "Seed", "subseed": "Variation seed",
    "subseed_strength": "Variation seed strength", "strength": "Denoising strength",
    "hires_denoising_strength": "Denoising strength", "hires_steps": "Hires steps",
    "hires_upscaler": "Hires upscaler",
}  # fmt: skip


def a1111_parameters(params: dict[str, Any], model: str) -> str:
    """The 'parameters' text A1111 writes into images, so other tools can read it back."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields: dict[str, Any] = {_LABELS[k]: params.get(k) for k in ("steps", "sampler")}
    fields["Sampler"] = fields["Sampler"] or "model default"
    for key in ("scheduler", "cfg_scale", "seed"):
        fields[_LABELS[key]] = params.get(key)
    if params.get("subseed_strength"):
        for key in ("subseed", "subseed_strength"):
            fields[_LABELS[key]] = params.get(key)
    if "base_width" in params:
        fields["Size"] = f"{params.get('base_width')}x{params.get('base_height')}"
        fields["Hires resize"] = f"{params.get('width')}x{params.get('height')}"
        for key in ("hires_steps", "hires_upscaler", "hires_denoising_strength"):
            fields[_LABELS[key]] = params.get(key)
    else:
        fields["Size"] = f"{params.get('width')}x{params.get('height')}"
        if "strength" in params:
            fields[_LABELS["strength"]] = params["strength"]
    fields["Model"] = model
    loras = params.get("loras") or []
    if loras:
        fields["Lora weights"] = " ".join(f"{x['name']}: {x['weight']}" for x in loras)
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)
