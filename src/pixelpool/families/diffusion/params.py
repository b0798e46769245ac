"""Diffusion parameter schemas, defaults and cost estimate (torch-free).

The API builds these (so validation happens before a job is queued); workers read
them back from the job's params dict. One class per operation, sharing a base.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pixelpool.families.base import OpParams
from pixelpool.families.diffusion.samplers import resolve_sampler

NATIVE_SIZE = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
MAX_SEED = 2**64 - 1
LatentFormat = Literal["safetensors", "fxlt"]
Size = Field(ge=8, le=8192, multiple_of=8)


def random_seed() -> int:
    return secrets.randbelow(2**32 - 1) + 1


class LoraRef(BaseModel):
    """A LoRA resolved by the registry: the worker loads it by path, caches it by key."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    key: str = Field(description="changes when the file changes: the adapter cache key")
    weight: float = Field(1.0, ge=-10, le=10)


class IPAdapterRef(BaseModel):
    """An IP-Adapter resolved by the registry, with this request's scale and reference images.

    The worker loads the adapter (and its image encoder) once per model, by key, and sets
    the scale per call; each job of a batch brings its own references."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str = Field(description="the weight file (.safetensors)")
    image_encoder: str = Field(description="the CLIP vision encoder's directory")
    key: str = Field(description="changes when the files change: the adapter cache key")
    scale: float = Field(0.7, ge=0, le=10)
    images: list[str] = Field(min_length=1, max_length=16, description="stored reference paths")

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs share a call only with the same adapter, scale and reference count (each
        job's embeddings are stacked, so their token counts must agree)."""
        return (self.key, self.scale, len(self.images))


class PreviewDecoderRef(BaseModel):
    """A TAESD decoder resolved by the registry for previews; the worker caches it by key."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["single_file", "diffusers"]
    key: str = Field(description="changes when the files change: the decoder cache key")


Preprocessor = Literal["none", "canny", "depth"]


class ControlNetRef(BaseModel):
    """A ControlNet resolved by the registry plus this request's control image and settings.

    The worker loads the model by path and caches it by key; it runs `preprocessor` on the
    image (canny with `canny_low`/`canny_high`, depth with the vision model at `depth_model`).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    key: str = Field(description="changes when the files change: the ControlNet cache key")
    architecture: str
    size_bytes: int = Field(0, ge=0, description="for the memory estimate")
    image: str = Field(description="path of the stored control image")
    conditioning_scale: float = Field(1.0, ge=0, le=10)
    guidance_start: float = Field(0.0, ge=0, le=1)
    guidance_end: float = Field(1.0, ge=0, le=1)
    preprocessor: Preprocessor = "none"
    canny_low: int = Field(100, ge=0, le=255)
    canny_high: int = Field(200, ge=0, le=255)
    depth_model: str | None = Field(
        None, description="path of the depth model (preprocessor depth)"
    )
    union: bool = Field(False, description="a union ControlNet (ControlNetUnionModel)")
    control_mode: int | None = Field(
        None, ge=0, description="a union ControlNet's control type (0 openpose, 1 depth, ...)"
    )

    @model_validator(mode="after")
    def _window(self) -> ControlNetRef:
        if self.guidance_start >= self.guidance_end:
            raise ValueError("guidance_start must be below guidance_end")
        if self.union != (self.control_mode is not None):
            raise ValueError("control_mode is for union ControlNets, and they need one")
        return self

    def share_key(self) -> tuple[Any, ...]:
        """What images must agree on to share a forward pass (their control images differ)."""
        return (self.key, self.conditioning_scale, self.guidance_start, self.guidance_end,
                self.control_mode)  # fmt: skip


class DiffusionParams(OpParams):
    """What every sampling operation shares; fully resolved (no defaults left to pick)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str = ""
    width: int = Size
    height: int = Size
    steps: int = Field(ge=1, le=1000)
    cfg_scale: float = Field(ge=0, le=100)
    seed: int = Field(ge=1, le=MAX_SEED)
    sampler: str | None = None
    scheduler: str | None = None
    preview_every: int = Field(0, ge=0, description="send a preview every N steps; 0: none")
    preview_decoder: PreviewDecoderRef | None = Field(
        None, description="TAESD decoder for previews; none: a latent-to-RGB approximation"
    )
    loras: list[LoraRef] = Field(default_factory=list)
    ip_adapter: IPAdapterRef | None = Field(None, description="reference images (IP-Adapter)")
    controlnets: list[ControlNetRef] = Field(default_factory=list)
    subseed: int | None = Field(None, ge=1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0, le=1)
    prompt_cache: str | None = Field(
        None, description="path of the client's text embeddings (clip_embeddings) to use"
    )
    prompt_cache_tokens: int = Field(0, ge=0, description="their token count (batch key)")
    emit_caches: bool = Field(False, description="return text embeddings and latents")

    @model_validator(mode="before")
    @classmethod
    def _sampler(cls, data: Any) -> Any:
        """Canonical names; an A1111 name such as 'DPM++ 2M Karras' sets `scheduler` too
        (the one place every dialect's request passes through on its way to a job)."""
        if not isinstance(data, dict) or not (data.get("sampler") or data.get("scheduler")):
            return data
        if not all(isinstance(data.get(k), str | None) for k in ("sampler", "scheduler")):
            return data  # the field types then say what is wrong
        sampler, schedule = resolve_sampler(
            data.get("sampler") or None, data.get("scheduler") or None
        )
        return {**data, "sampler": sampler, "scheduler": schedule}

    def lora_key(self) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((lora.key, lora.weight) for lora in self.loras))

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can share one forward pass."""
        return (
            type(self).__name__, self.width, self.height, self.steps, self.cfg_scale,
            self.sampler, self.scheduler, self.lora_key(), self.prompt_cache_tokens,
            self.ip_adapter.batch_key() if self.ip_adapter else None,
            tuple(c.share_key() for c in self.controlnets),
        )  # fmt: skip


class Txt2ImgParams(DiffusionParams):
    """txt2img; `latent_format` set means "return the latents instead of an image"."""

    latent_format: LatentFormat | None = None

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.latent_format)


class Img2ImgParams(DiffusionParams):
    """img2img (and, with masks, inpaint): one output per input image, seeds seed, seed+1..."""

    images: list[str] = Field(min_length=1, description="paths of the uploaded input images")
    masks: list[str] = Field([], description="one per image, or one for all; white = repaint")
    strength: float = Field(0.75, ge=0, le=1)

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.strength)


class HiresParams(DiffusionParams):
    """Hi-res fix: a base pass, an upscale, a second pass; width/height is the target."""

    base_width: int = Size
    base_height: int = Size
    hires_steps: int = Field(15, ge=1, le=1000)
    hires_denoising_strength: float = Field(0.33, ge=0, le=1)
    hires_upscaler: Literal["latent", "pixel"] = "latent"
    latents: str | None = Field(None, description="start from these latents (hires-latents)")
    latent_format: LatentFormat | None = None

    def batch_key(self) -> tuple[Any, ...]:
        return (
            *super().batch_key(), self.base_width, self.base_height, self.hires_steps,
            self.hires_denoising_strength, self.hires_upscaler, self.latents is None,
            self.latent_format,
        )  # fmt: skip


class UpscalerRef(BaseModel):
    """An upscale-family model resolved by the registry for enhance: the diffusion worker
    loads it by path and caches it by key."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    key: str = Field(description="changes when the file changes: the upscaler cache key")
    size_bytes: int = Field(0, ge=0)


class EnhanceParams(DiffusionParams):
    """Enhance (FoxBurrow): upscale the image, then img2img at `strength` on the target size
    (width/height). With `latents`, a bilinear latent upscale replaces the pixel upscale
    and the VAE encode. `steps` is the number of steps the img2img pass runs (A1111's
    hires steps); `upscaler` None means a plain Lanczos resize."""

    image: str | None = Field(None, description="path of the uploaded input image")
    image_width: int = Field(0, ge=0, description="input width (for the cost estimate)")
    image_height: int = Field(0, ge=0, description="input height (for the cost estimate)")
    latents: str | None = Field(None, description="path of the uploaded latents of the image")
    strength: float = Field(0.33, gt=0, le=1)
    upscaler: UpscalerRef | None = None

    @model_validator(mode="after")
    def _one_input(self) -> EnhanceParams:
        if self.image is None and self.latents is None:
            raise ValueError("enhance needs an image or latents")
        return self

    def upscaler_key(self) -> str | None:
        return None if self.latents is not None or self.upscaler is None else self.upscaler.key

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.strength, self.latents is None, self.upscaler_key())


class DecodeLatentsParams(OpParams):
    """Latents (file path) -> image, with the model's VAE."""

    model_config = ConfigDict(extra="forbid")

    latents: str
    seed: int = 0

    def batch_key(self) -> tuple[Any, ...]:
        return ("decode",)


class EncodeLatentsParams(OpParams):
    """Image (file path) -> latents, with the model's VAE (the distribution's mean)."""

    model_config = ConfigDict(extra="forbid")

    image: str
    width: int = Size
    height: int = Size
    latent_format: LatentFormat = "safetensors"
    seed: int = 0

    def batch_key(self) -> tuple[Any, ...]:
        return ("encode", self.width, self.height, self.latent_format)


OP_PARAMS: dict[str, type[BaseModel]] = {
    "txt2img": Txt2ImgParams,
    "img2img": Img2ImgParams,
    "inpaint": Img2ImgParams,
    "hires": HiresParams,
    "decode_latents": DecodeLatentsParams,
    "encode_latents": EncodeLatentsParams,
    "enhance": EnhanceParams,
}


def resolve_seed(seed: int | None) -> int:
    """0, -1 and None mean 'pick one'; the chosen seed is reported back."""
    return random_seed() if seed in (None, 0, -1) else int(seed)


def default_hires_base(target: int) -> int:
    """FoxBurrow's default base size: half the target, rounded up to a multiple of 64."""
    return max(64, -(-target // 2 // 64) * 64)
