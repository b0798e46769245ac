"""Latent operations: return latents, decode them, encode images into them.

Decoding mirrors what the pipelines do at the end of a run (same VAE call, same
post-processing), so generate-latents followed by decode-latents gives exactly
the image generate gives. Latent results travel as bytes in `Result.info["blob"]`
with their media type in `Result.info["media_type"]`; the job service stores them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelpool.families.diffusion.latent_format import (
    MEDIA_TYPES,
    as_batch,
    decode_latents,
    encode_latents,
)
from pixelpool.families.diffusion.params import (
    DecodeLatentsParams,
    DiffusionParams,
    EncodeLatentsParams,
)
from pixelpool.pipelines.base import CancelFn, Loaded, Pending, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion import accel, invariance
from pixelpool.pipelines.diffusion.common import to_uint8
from pixelpool.pipelines.diffusion.images import open_image, split_alpha

# Pipelines whose latents this module decodes exactly as their own call would (FLUX packs
# its latents, SD3 shifts them: those decode inside diffusers).
DECODED_HERE = frozenset({"sd15", "sdxl"})
# Held while the VAE works for a batch decoding beside the next one, and by every batch
# that may use the VAE itself: the float16 VAEs that overflow are upcast in place
# (`accel.vae_upcast`, and diffusers' own SDXL code), which must not happen mid-decode.
VAE_LOCK = threading.RLock()


def vae_meta(pipe: Any, architecture: str) -> dict[str, Any]:
    """What a reader needs to decode these latents: the architecture and the VAE scaling."""
    return {
        "architecture": architecture,
        "scaling_factor": float(pipe.vae.config.scaling_factor),
        "shift_factor": getattr(pipe.vae.config, "shift_factor", None),
    }


def latent_blob(
    loaded: Loaded, latents: torch.Tensor, meta: dict[str, Any], fmt: str
) -> dict[str, Any]:
    """Result.info entries carrying one latent tensor as bytes."""
    array = latents.detach().float().cpu().numpy()
    full = {**vae_meta(loaded.obj, loaded.architecture), **meta}
    return {"blob": encode_latents(array, full, fmt), "media_type": MEDIA_TYPES[fmt],
            "latent_shape": list(array.shape)}  # fmt: skip


def latents_results(
    loaded: Loaded, latents: torch.Tensor, params: list[DiffusionParams]
) -> list[Result]:
    """One latent result per job of a txt2img/hires batch that asked for latents."""
    results = []
    for i, p in enumerate(params):
        meta = {"width": p.width, "height": p.height, "seed": p.seed, "steps": p.steps,
                "cfg_scale": p.cfg_scale}  # fmt: skip
        fmt = getattr(p, "latent_format", None) or "safetensors"
        info = latent_blob(loaded, latents[i : i + 1], meta, fmt)
        results.append(Result(images=[], seeds=[p.seed], info=info))
    return results


def read_latents(loaded: Loaded, path: str | Path) -> torch.Tensor:
    array, _meta = decode_latents(Path(path).read_bytes())
    channels = loaded.obj.vae.config.latent_channels
    return torch.from_numpy(as_batch(array, channels).copy())


@torch.inference_mode()
def decode(pipe: Any, latents: torch.Tensor) -> list[np.ndarray]:
    """Latents (denoiser space) -> uint8 images, exactly as the pipelines decode."""
    with VAE_LOCK, accel.vae_upcast(pipe):
        return _decode(pipe, latents)


def decoding(
    loaded: Loaded, latents: torch.Tensor, make: Callable[[int, np.ndarray], Result]
) -> Pending:
    """The rest of a batch denoised to `latents`: decode them as the pipeline would have,
    and `make(i, image)` the i-th job's result from its image.

    Batch-invariant, the VAE decodes one image at a time anyway (diffusers' slicing makes
    the same calls), so here each image is decoded and its result handed on before the
    next one: the server stores and returns it while the rest of the batch decodes.
    Otherwise the whole batch decodes in one call and the results follow it."""
    pipe = loaded.obj

    @torch.inference_mode()  # a generator: torch scopes the mode to each step of it
    def finish() -> Iterator[Result]:
        invariant = invariance.enabled()
        invariance.one_image_vae(pipe, invariant)
        with VAE_LOCK, accel.vae_upcast(pipe):
            if invariant:
                for i in range(latents.shape[0]):
                    yield make(i, _decode(pipe, latents[i : i + 1])[0])
            else:
                for i, image in enumerate(_decode(pipe, latents)):
                    yield make(i, image)

    return Pending(finish, tensors=[latents])


def _decode(pipe: Any, latents: torch.Tensor) -> list[np.ndarray]:
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std_t / vae.config.scaling_factor + mean_t
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    out = pipe.image_processor.postprocess(
        image, output_type="np", do_denormalize=[True] * image.shape[0]
    )
    return to_uint8(out)


@torch.inference_mode()
def encode(pipe: Any, image: Any, width: int, height: int) -> torch.Tensor:
    """An image -> latents in denoiser space (the VAE distribution's mean: deterministic)."""
    vae = pipe.vae
    dtype = vae.dtype  # latents keep the model's dtype even when the VAE ran upcast
    pixels = pipe.image_processor.preprocess(image, height=height, width=width)
    with accel.vae_upcast(pipe):
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        latents = dist.mode() * vae.config.scaling_factor
    return latents.to(dtype)


def run_decode(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    results = []
    for n, item in enumerate(batch, 1):
        p = DecodeLatentsParams.model_validate(item.params)
        images = decode(loaded.obj, read_latents(loaded, p.latents))
        results.append(Result(images=images, seeds=[p.seed] * len(images)))
        progress(n, len(batch), "decode", None)
    return results


def run_encode(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    results = []
    for n, item in enumerate(batch, 1):
        p = EncodeLatentsParams.model_validate(item.params)
        rgb, _alpha = split_alpha(open_image(p.image))
        latents = encode(loaded.obj, rgb, p.width, p.height)
        meta = {"width": p.width, "height": p.height, "seed": p.seed}
        info = latent_blob(loaded, latents, meta, p.latent_format)
        results.append(Result(images=[], seeds=[p.seed], info=info))
        progress(n, len(batch), "encode", None)
    return results
