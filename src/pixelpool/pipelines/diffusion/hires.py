"""Hi-res fix: a base pass at a small size, an upscale, and an img2img pass at the target.

The upscale happens in latent space (bilinear, A1111's "Latent") or in pixel space
(decode, Lanczos, re-encode inside img2img). As in A1111, `hires_steps` is the number
of steps the second pass actually runs, whatever its denoising strength.
`hires-latents` skips the base pass and starts from uploaded latents.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pixelpool.families.diffusion.params import HiresParams
from pixelpool.pipelines.base import CancelFn, Loaded, Pending, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion import sampling
from pixelpool.pipelines.diffusion.common import to_uint8
from pixelpool.pipelines.diffusion.latents import (
    DECODED_HERE,
    decode,
    decoding,
    latents_results,
    read_latents,
)
from pixelpool.pipelines.diffusion.txt2img import generate, result_info

MAX_CALL_STEPS = 1000


def second_pass_steps(hires_steps: int, strength: float) -> int:
    """The step count to give img2img so that it runs `hires_steps` steps at `strength`."""
    return min(MAX_CALL_STEPS, max(hires_steps, math.ceil(hires_steps / max(strength, 1e-3))))


def upscale(
    loaded: Loaded, latents: torch.Tensor, p: HiresParams
) -> torch.Tensor | list[Image.Image]:
    """Base latents -> the second pass's input: bigger latents, or resized images."""
    if p.hires_upscaler == "latent":
        scale = loaded.obj.vae_scale_factor
        size = (p.height // scale, p.width // scale)
        return F.interpolate(latents.float(), size=size, mode="bilinear").to(latents.dtype)
    images = decode(loaded.obj, latents)
    return [
        Image.fromarray(img).resize((p.width, p.height), Image.Resampling.LANCZOS) for img in images
    ]


def start(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> Pending | None:
    """Both passes run, the final decode left to the Pending; None (nothing run) where a
    pass uses the VAE (pixel upscaler), the decode stays inside diffusers, or latents
    were asked for."""
    params = [HiresParams.model_validate(item.params) for item in batch]
    first = params[0]
    if (
        first.latent_format is not None
        or first.hires_upscaler != "latent"
        or loaded.architecture not in DECODED_HERE
    ):
        return None
    out = _passes(loaded, params, progress, cancel, "latent")
    return decoding(loaded, out.images, lambda i, image: Result(
        images=[image], seeds=[params[i].seed],
        info={**result_info(params[i]), "hires": params[i].hires_upscaler},
    ))  # fmt: skip


def _passes(
    loaded: Loaded, params: list[HiresParams], progress: ProgressFn, cancel: CancelFn,
    output_type: str,
) -> Any:  # fmt: skip
    """The base pass (or the uploaded latents), the upscale, and the second pass."""
    first = params[0]
    if first.latents is None:
        base = generate(
            loaded, params, progress, cancel, output_type="latent", stage="base",
            width=first.base_width, height=first.base_height,
        ).images  # fmt: skip
    else:
        base = torch.cat([read_latents(loaded, p.latents or "") for p in params])
    image: Any = upscale(loaded, base, first)
    steps = second_pass_steps(first.hires_steps, first.hires_denoising_strength)
    pipe = sampling.derived(loaded, "img2img")
    return sampling.call(
        loaded, pipe, params, [p.seed for p in params], progress, cancel,
        total=sampling.denoise_steps(steps, first.hires_denoising_strength), stage="hires",
        steps=steps, image=image, strength=first.hires_denoising_strength,
        output_type=output_type,
    )  # fmt: skip


def run(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    params = [HiresParams.model_validate(item.params) for item in batch]
    latent_out = params[0].latent_format is not None
    out = _passes(loaded, params, progress, cancel, "latent" if latent_out else "np")
    if latent_out:
        return latents_results(loaded, out.images, params)
    return [
        Result(images=[img], seeds=[p.seed], info={**result_info(p), "hires": p.hires_upscaler})
        for img, p in zip(to_uint8(out.images), params, strict=True)
    ]
