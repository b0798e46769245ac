"""txt2img: one diffusers call for a whole batch, one generator per image."""

from __future__ import annotations

import torch

from pixelpool.pipelines.base import CancelFn, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion.common import (
    cpu_generators,
    make_scheduler,
    step_callback,
    to_uint8,
)
from pixelpool.pipelines.diffusion.params import Txt2ImgParams


def run(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    params = [Txt2ImgParams.model_validate(item.params) for item in batch]
    first = params[0]
    pipe = loaded.obj
    original_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(pipe, first)
    preview_every = max((p.preview_every for p in params), default=0)
    try:
        with torch.inference_mode():
            out = pipe(
                prompt=[p.prompt for p in params],
                negative_prompt=[p.negative_prompt for p in params],
                width=first.width,
                height=first.height,
                num_inference_steps=first.steps,
                guidance_scale=first.cfg_scale,
                generator=cpu_generators([p.seed for p in params]),
                output_type="np",
                callback_on_step_end=step_callback(
                    progress, cancel, first.steps, loaded.architecture, preview_every
                ),
            )
    finally:
        pipe.scheduler = original_scheduler
    return [
        Result(images=[img], seeds=[p.seed], info={"sampler": p.sampler or "model default"})
        for img, p in zip(to_uint8(out.images), params, strict=True)
    ]
