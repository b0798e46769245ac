"""Pieces every diffusion operation shares: schedulers, step callbacks, uint8 output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffusers
import numpy as np
import torch

from pixelpool.pipelines.base import CancelFn, Cancelled, ProgressFn
from pixelpool.pipelines.diffusion.params import DiffusionParams
from pixelpool.pipelines.diffusion.samplers import scheduler_config

# Approximate latent -> RGB for live previews, without running the VAE.
# Per-architecture 4x3 factors (the widely used "latent2rgb" tables).
LATENT_RGB = {
    "sd15": [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
             [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    "sdxl": [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
             [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
}  # fmt: skip


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Float [0, 1] images -> uint8, rounded exactly as diffusers' numpy_to_pil does."""
    return [np.ascontiguousarray((img * 255).round().astype(np.uint8)) for img in images]


def make_scheduler(pipe: Any, params: DiffusionParams) -> Any:
    """A fresh scheduler per batch: the model's own unless a sampler was asked for.

    Built from the model's scheduler config, so its prediction type (epsilon or
    v-prediction) and zero-terminal-SNR setting carry over to any sampler.
    """
    base = pipe.scheduler
    cls_name, extra = scheduler_config(params.sampler, params.scheduler)
    cls = getattr(diffusers, cls_name) if cls_name else type(base)
    return cls.from_config(base.config, **extra)


def latent_preview(latents: torch.Tensor, architecture: str) -> list[np.ndarray]:
    """Cheap RGB previews of a batch of latents (1/8 of the image size).

    Packed (sequence-shaped) latents, as FLUX uses, give no preview.
    """
    if latents.ndim != 4:
        return []
    factors = torch.tensor(LATENT_RGB.get(architecture, LATENT_RGB["sd15"]))
    rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu()[:, :4], factors)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return [np.ascontiguousarray(img) for img in rgb.numpy()]


def step_callback(
    progress: ProgressFn,
    cancel: CancelFn,
    total: int,
    architecture: str,
    preview_every: int = 0,
    stage: str = "denoise",
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A diffusers callback_on_step_end that reports progress and honours cancellation."""

    def on_step(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        done = step + 1
        previews = None
        if preview_every and (done % preview_every == 0 or done == total):
            latents = kwargs.get("latents")
            if latents is not None:
                previews = latent_preview(latents, architecture) or None
        progress(done, total, stage, previews)
        if cancel():
            raise Cancelled()
        return {}

    return on_step


def cpu_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: a seed gives the same image on any device, in any batch."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
