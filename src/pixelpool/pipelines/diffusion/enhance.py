"""Enhance (FoxBurrow's op): upscale an image, then img2img it at a low strength.

Pixel path: the upscale family's model (spandrel, tiled) at its native factor, then
Lanczos to the target, then img2img on the diffusion model. Latent path (the client
sent the image's latents): a bilinear latent upscale to the target, then img2img from
those latents (no pixel upscale, no VAE encode), as the hi-res fix's "Latent" upscaler.
As in A1111's hi-res fix, `steps` is the number of steps the img2img pass runs.

The upscaler runs inside the diffusion worker, cached here by its file's key (a small
LRU beside the model cache, like the preview decoders). Each job is upscaled on its
own, so a job's image does not depend on the batch it ran in; the img2img pass is one
call for the whole batch.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixelpool.families.diffusion.params import EnhanceParams, UpscalerRef
from pixelpool.families.upscale.params import UpscaleParams
from pixelpool.pipelines.base import CancelFn, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion import sampling
from pixelpool.pipelines.diffusion.common import to_uint8
from pixelpool.pipelines.diffusion.hires import second_pass_steps
from pixelpool.pipelines.diffusion.images import with_alpha
from pixelpool.pipelines.diffusion.latents import read_latents
from pixelpool.pipelines.diffusion.txt2img import result_info
from pixelpool.pipelines.upscale.family import read_input, resize, upscale_images
from pixelpool.pipelines.upscale.model import UpscaleModel, load_upscaler

MAX_UPSCALERS = 2  # loaded upscalers kept per worker (most are tens of MB)
_UPSCALERS: OrderedDict[tuple[str, str], UpscaleModel] = OrderedDict()
_LOCK = threading.Lock()


def upscaler_for(ref: UpscalerRef, device: str) -> UpscaleModel:
    """The upscaler `ref` names, loaded on `device` once per file version."""
    key = (ref.key, device)
    with _LOCK:
        if key in _UPSCALERS:
            _UPSCALERS.move_to_end(key)
            return _UPSCALERS[key]
    model = load_upscaler(ref.path, device)
    with _LOCK:
        _UPSCALERS[key] = model
        while len(_UPSCALERS) > MAX_UPSCALERS:
            _UPSCALERS.popitem(last=False)
    return model


def upscale_pixels(
    p: EnhanceParams, device: str, progress: ProgressFn, cancel: CancelFn
) -> tuple[Image.Image, np.ndarray | None]:
    """The job's image at the target size (RGB) and its alpha (Lanczos), if it had one."""
    rgb, alpha = read_input(p.image or "")
    size = (p.width, p.height)
    if p.upscaler is None:
        out = resize(rgb, size)
        progress(1, 1, "upscale", None)
    else:
        model = upscaler_for(p.upscaler, device)
        job = UpscaleParams(image=p.image or "", width=p.width, height=p.height)
        (out,) = upscale_images(model, [job], [(rgb, None)], progress, cancel)
    return Image.fromarray(out), None if alpha is None else resize(alpha, size)


def upscale_latents(loaded: Loaded, params: list[EnhanceParams]) -> torch.Tensor:
    """Each job's latents, bilinear to the target's latent size (A1111's "Latent")."""
    scale = loaded.obj.vae_scale_factor
    size = (params[0].height // scale, params[0].width // scale)
    latents = [read_latents(loaded, p.latents or "") for p in params]
    return torch.cat([F.interpolate(x.float(), size=size, mode="bilinear") for x in latents])


def run(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    params = [EnhanceParams.model_validate(item.params) for item in batch]
    first = params[0]
    alphas: list[np.ndarray | None] = [None] * len(params)
    image: Any
    if first.latents is not None:
        image = upscale_latents(loaded, params)
    else:
        upscaled = [upscale_pixels(p, loaded.device, progress, cancel) for p in params]
        image = [rgb for rgb, _ in upscaled]
        alphas = [alpha for _, alpha in upscaled]
    steps = second_pass_steps(first.steps, first.strength)
    pipe = sampling.derived(loaded, "img2img")
    kwargs: dict[str, Any] = {}
    if "height" in inspect.signature(pipe.__call__).parameters:  # not SD 1.x/SDXL img2img
        kwargs.update(width=first.width, height=first.height)
    out = sampling.call(
        loaded, pipe, params, [p.seed for p in params], progress, cancel,
        total=sampling.denoise_steps(steps, first.strength), stage="hires",
        steps=steps, image=image, strength=first.strength, output_type="np", **kwargs,
    )  # fmt: skip
    upscaler = "latent" if first.latents is not None else (
        first.upscaler.name if first.upscaler else "lanczos")  # fmt: skip
    return [
        Result(
            images=[with_alpha(img, alpha)],
            seeds=[p.seed],
            info={**result_info(p), "strength": p.strength, "upscaler": upscaler},
        )
        for img, alpha, p in zip(to_uint8(out.images), alphas, params, strict=True)
    ]
