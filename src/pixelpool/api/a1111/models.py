"""Request bodies of the A1111 dialect, as A1111 clients send them.

Known fields are strictly typed (`"20"` is not a step count); the many A1111 fields
this server has no use for (styles, restore_faces, tiling, eta, scripts...) are
accepted and ignored, as clients send them all with defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from pixelpool.api.validation import Name, Prompt, RequestModel


class A1111Model(RequestModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class Txt2ImgRequest(A1111Model):
    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: Name | None = None
    sampler_index: Name | None = None
    scheduler: Name | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_second_pass_steps: int = 0
    hr_upscaler: str | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    alwayson_scripts: dict[str, Any] | None = None  # only `controlnet` is read
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    inpainting_fill: int = 0
    mask_blur: int | None = None
    inpaint_full_res: bool | int = False
    resize_mode: int = 0


class PngInfoRequest(A1111Model):
    image: str
