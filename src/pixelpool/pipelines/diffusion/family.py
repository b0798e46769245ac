"""The diffusion family: txt2img for SD 1.x and SDXL through diffusers."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import torch

from pixelpool.pipelines.base import (
    CancelFn,
    Cancelled,
    Loaded,
    ProgressFn,
    Result,
    WorkItem,
)
from pixelpool.pipelines.diffusion.loader import load_pipeline, module_bytes, torch_dtype
from pixelpool.pipelines.diffusion.params import Txt2ImgParams
from pixelpool.pipelines.diffusion.samplers import SAMPLERS, SCHEDULES


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Float [0, 1] images -> uint8, rounded exactly as diffusers' numpy_to_pil does."""
    return [np.ascontiguousarray((img * 255).round().astype(np.uint8)) for img in images]


def make_scheduler(pipe: Any, params: Txt2ImgParams) -> Any:
    """A fresh scheduler per batch: the model's own unless a sampler was asked for."""
    base = pipe.scheduler
    if params.sampler is None and params.scheduler is None:
        return type(base).from_config(base.config)
    cls_name, extra = SAMPLERS[params.sampler] if params.sampler else (type(base).__name__, {})
    extra = {**extra, **SCHEDULES.get(params.scheduler or "Normal", {})}
    return getattr(diffusers, cls_name).from_config(base.config, **extra)


class DiffusionFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str) -> Loaded:
        pipe = load_pipeline(entry, torch_dtype(device, dtype))
        pipe.to(device)
        return Loaded(pipe, module_bytes(pipe), entry["architecture"], device)

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        params = [Txt2ImgParams.model_validate(item.params) for item in batch]
        first = params[0]
        pipe = loaded.obj
        original_scheduler = pipe.scheduler
        pipe.scheduler = make_scheduler(pipe, first)
        total = first.steps

        def on_step(_pipe: Any, step: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            progress(step + 1, total, "denoise")
            if cancel():
                raise Cancelled()
            return {}

        try:
            with torch.inference_mode():
                out = pipe(
                    prompt=[p.prompt for p in params],
                    negative_prompt=[p.negative_prompt for p in params],
                    width=first.width,
                    height=first.height,
                    num_inference_steps=first.steps,
                    guidance_scale=first.cfg_scale,
                    # One CPU generator per image: the same seed gives the same image
                    # on any device and in any batch.
                    generator=[torch.Generator("cpu").manual_seed(p.seed) for p in params],
                    output_type="np",
                    callback_on_step_end=on_step,
                )
        finally:
            pipe.scheduler = original_scheduler
        images = to_uint8(out.images)
        return [
            Result(images=[img], seeds=[p.seed], info={"sampler": p.sampler or "model default"})
            for img, p in zip(images, params, strict=True)
        ]


FAMILY = DiffusionFamily()
