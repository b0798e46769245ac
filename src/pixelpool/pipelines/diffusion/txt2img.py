"""txt2img: one diffusers call for a whole batch, one generator per image."""

from __future__ import annotations

from typing import Any

from pixelpool.families.diffusion.params import DiffusionParams, Txt2ImgParams
from pixelpool.pipelines.base import CancelFn, Loaded, Pending, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion import controlnet, ip_adapter, sampling
from pixelpool.pipelines.diffusion.common import to_uint8
from pixelpool.pipelines.diffusion.latents import DECODED_HERE, decoding


def latent_shape(pipe: Any, width: int, height: int) -> tuple[int, ...]:
    """The shape of one image's initial noise, as the pipeline draws it."""
    scale = pipe.vae_scale_factor
    channels = pipe.unet.config.in_channels if hasattr(pipe, "unet") else None
    if channels is None:
        channels = pipe.transformer.config.in_channels
    return (1, channels, height // scale, width // scale)


def generate(
    loaded: Loaded,
    params: list[DiffusionParams],
    progress: ProgressFn,
    cancel: CancelFn,
    output_type: str = "np",
    stage: str = "denoise",
    **overrides: Any,
) -> Any:
    """A txt2img call for a batch; variation seeds become explicit initial latents."""
    first = params[0]
    pipe = loaded.obj
    width, height = overrides.pop("width", first.width), overrides.pop("height", first.height)
    seeds = [p.seed for p in params]
    noise = sampling.variation_noise(latent_shape(pipe, width, height), seeds, params)
    if noise is not None:
        overrides["latents"] = noise
    pipe, control = controlnet.prepare(loaded, "txt2img", pipe, params)
    overrides.update(control)
    return sampling.call(
        loaded, pipe, params, seeds, progress, cancel, total=first.steps, stage=stage,
        width=width, height=height, output_type=output_type, **overrides,
    )  # fmt: skip


def run(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    params = [Txt2ImgParams.model_validate(item.params) for item in batch]
    if params[0].latent_format is not None:
        from pixelpool.pipelines.diffusion.latents import latents_results

        out = generate(loaded, params, progress, cancel, output_type="latent")
        return latents_results(loaded, out.images, params)
    out = generate(loaded, params, progress, cancel)
    return [
        Result(images=[img], seeds=[p.seed], info=result_info(p))
        for img, p in zip(to_uint8(out.images), params, strict=True)
    ]


def start(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> Pending | None:
    """The batch denoised, its decode left to the Pending; None (nothing run) where the
    decode must stay inside diffusers or no image is made (latents asked for)."""
    params = [Txt2ImgParams.model_validate(item.params) for item in batch]
    if params[0].latent_format is not None or loaded.architecture not in DECODED_HERE:
        return None
    latents = generate(loaded, params, progress, cancel, output_type="latent").images
    return decoding(loaded, latents, lambda i, image: Result(
        images=[image], seeds=[params[i].seed], info=result_info(params[i])
    ))  # fmt: skip


def result_info(p: DiffusionParams) -> dict[str, Any]:
    """What a result reports besides its images (JSON-able)."""
    info: dict[str, Any] = {"sampler": p.sampler or "model default"}
    if p.loras:
        info["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in p.loras]
    if p.controlnets:
        info["controlnets"] = [
            {"name": c.name, "conditioning_scale": c.conditioning_scale,
             "preprocessor": c.preprocessor} for c in p.controlnets
        ]  # fmt: skip
    if p.subseed and p.subseed_strength:
        info.update(subseed=p.subseed, subseed_strength=p.subseed_strength)
    return {**info, **ip_adapter.result_info(p.ip_adapter)}
