"""One diffusers call for a batch, shared by every operation.

Sets the sampler and LoRAs for the batch, builds prompt inputs and generators (one
CPU generator per image), reports progress, and restores the model's scheduler.
Derived pipelines (img2img, inpaint) share the loaded model's modules: no copies.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

from pixelpool.families.diffusion.params import DiffusionParams
from pixelpool.pipelines.base import CancelFn, Loaded, ProgressFn
from pixelpool.pipelines.diffusion import invariance, ip_adapter, lora, previews
from pixelpool.pipelines.diffusion.common import cpu_generators, make_scheduler, step_callback
from pixelpool.pipelines.diffusion.embeddings import prompt_inputs

_AUTO = {"img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}
_DERIVED: weakref.WeakKeyDictionary[Any, dict[str, DiffusionPipeline]] = weakref.WeakKeyDictionary()


def derived(loaded: Loaded, kind: str) -> DiffusionPipeline:
    """The loaded model as a txt2img, img2img or inpaint pipeline (same modules, cached)."""
    base = loaded.obj
    if kind == "txt2img":
        return base
    cache = _DERIVED.setdefault(base, {})
    if kind not in cache:
        pipe = _AUTO[kind].from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        cache[kind] = pipe
    return cache[kind]


@contextlib.contextmanager
def configured(loaded: Loaded, pipe: DiffusionPipeline, params: DiffusionParams) -> Iterator[None]:
    """The batch's sampler and LoRAs for the duration of one call, batch-invariant unless
    the worker's `batch_invariant` setting is off."""
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(pipe, params)
    lora.activate(loaded.obj, params.loras)
    try:
        with invariance.for_batch(pipe):
            yield
    finally:
        pipe.scheduler = original


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (keeps the noise's norm)."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat / a_flat.norm(), b_flat / b_flat.norm()).clamp(-1, 1)
    omega = torch.acos(cos)
    if omega.abs() < 1e-4:
        return ((1 - t) * a.double() + t * b.double()).to(a.dtype)
    so = torch.sin(omega)
    mixed = (torch.sin((1 - t) * omega) / so) * a.double() + (
        torch.sin(t * omega) / so
    ) * b.double()
    return mixed.to(a.dtype)


def variation_noise(
    shape: tuple[int, ...], seeds: list[int], params: list[DiffusionParams]
) -> torch.Tensor | None:
    """Initial noise with variation seeds (A1111's subseed), or None when none asks for it.

    Each image's noise is drawn exactly as diffusers draws it (one CPU generator per
    image), then moved towards the subseed's noise by `subseed_strength`.
    """
    if all(not p.subseed or p.subseed_strength == 0 for p in params):
        return None
    noises = []
    for seed, p in zip(seeds, params, strict=True):
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
        if p.subseed and p.subseed_strength > 0:
            sub = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(p.subseed))
            noise = sub if p.subseed_strength == 1 else slerp(p.subseed_strength, noise, sub)
        noises.append(noise)
    return torch.cat(noises)


def call(
    loaded: Loaded,
    pipe: DiffusionPipeline,
    params: list[DiffusionParams],
    seeds: list[int],
    progress: ProgressFn,
    cancel: CancelFn,
    *,
    total: int,
    stage: str = "denoise",
    steps: int | None = None,
    **kwargs: Any,
) -> Any:
    """Run `pipe` once for a batch: `params` and `seeds` have one entry per output image."""
    first = params[0]
    steps = first.steps if steps is None else steps
    preview = previews.for_batch(loaded, params, kwargs.get("width"), kwargs.get("height"))
    with (
        configured(loaded, pipe, first),
        torch.inference_mode(),
        ip_adapter.applied(loaded.obj, pipe, params) as references,
    ):
        if hasattr(pipe.scheduler, "noise_sampler_seed"):
            # DPM++ SDE draws its Brownian noise from the global RNG unless seeded: one
            # tree per image, seeded by the image's seed.
            pipe.scheduler.noise_sampler_seed = list(seeds)
        return pipe(
            **prompt_inputs(pipe, params),
            **references,
            num_inference_steps=steps,
            guidance_scale=first.cfg_scale,
            generator=cpu_generators(seeds),
            callback_on_step_end=step_callback(progress, cancel, total, preview, stage),
            **kwargs,
        )


def denoise_steps(steps: int, strength: float) -> int:
    """How many steps diffusers runs for an img2img pass of `steps` at `strength`."""
    return steps - int(max(steps - min(steps * strength, steps), 0))
