"""img2img and inpaint: every input image of every job in one diffusers call.

A job may carry several images; each gives one output, seeded seed, seed+1, ...
A target size with another aspect ratio than the input outpaints: the input is
fitted onto a canvas of the target size and only the new area is painted.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.families.diffusion.params import Img2ImgParams
from pixelpool.pipelines.base import CancelFn, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion import controlnet, sampling
from pixelpool.pipelines.diffusion.common import to_uint8
from pixelpool.pipelines.diffusion.images import (
    open_image,
    prepare_init,
    prepare_mask,
    split_alpha,
    with_alpha,
)
from pixelpool.pipelines.diffusion.txt2img import result_info


def _inputs(
    p: Img2ImgParams, inpaint: bool
) -> list[tuple[Image.Image, Image.Image | None, np.ndarray | None]]:
    """(init image, mask or None, alpha to restore or None) for each input image of a job."""
    out = []
    for i, path in enumerate(p.images):
        rgb, alpha = split_alpha(open_image(path))
        init, outpaint_mask = prepare_init(rgb, p.width, p.height)
        mask = outpaint_mask
        if inpaint:
            mask_path = p.masks[i] if len(p.masks) > 1 else p.masks[0]
            mask = prepare_mask(mask_path, rgb.size)
            if outpaint_mask is not None:  # the mask follows the image onto the canvas
                canvas, _ = prepare_init(mask.convert("RGB"), p.width, p.height)
                mask = Image.fromarray(np.maximum(np.asarray(canvas.convert("L")),
                                                  np.asarray(outpaint_mask)))  # fmt: skip
        keep_alpha = alpha if outpaint_mask is None and rgb.size == (p.width, p.height) else None
        out.append((init, mask, keep_alpha))
    return out


Flat = tuple[Img2ImgParams, int, Image.Image, Image.Image | None, np.ndarray | None]


def _denoise(
    loaded: Loaded, flat: list[Flat], progress: ProgressFn, cancel: CancelFn
) -> list[np.ndarray]:
    """One diffusers call for images that all have a mask, or all have none."""
    first = flat[0][0]
    kwargs: dict[str, Any] = {"image": [f[2] for f in flat], "strength": first.strength}
    masked = flat[0][3] is not None
    if masked:
        kwargs["mask_image"] = [f[3] for f in flat]
    kind = "inpaint" if masked else "img2img"
    pipe, control = controlnet.prepare(
        loaded, kind, sampling.derived(loaded, kind), [f[0] for f in flat]
    )
    kwargs.update(control)
    if "height" in inspect.signature(pipe.__call__).parameters:  # not SD 1.x/SDXL img2img
        kwargs.update(width=first.width, height=first.height)
    out = sampling.call(
        loaded, pipe, [f[0] for f in flat], [f[1] for f in flat], progress, cancel,
        total=sampling.denoise_steps(first.steps, first.strength), output_type="np", **kwargs,
    )  # fmt: skip
    return to_uint8(out.images)


def run(
    loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> list[Result]:
    jobs = [Img2ImgParams.model_validate(item.params) for item in batch]
    inpaint = batch[0].op == "inpaint"
    flat: list[Flat] = [
        (p, p.seed + i, init, mask, alpha)
        for p in jobs
        for i, (init, mask, alpha) in enumerate(_inputs(p, inpaint))
    ]
    # Plain img2img and masked (inpaint or outpaint) images take different pipelines.
    outputs: dict[int, np.ndarray] = {}
    for masked in (False, True):
        group = [i for i, f in enumerate(flat) if (f[3] is not None) == masked]
        if group:
            images = _denoise(loaded, [flat[i] for i in group], progress, cancel)
            outputs.update(zip(group, images, strict=True))
    results, index = [], 0
    for p in jobs:
        mine = range(index, index + len(p.images))
        index += len(p.images)
        results.append(
            Result(
                images=[with_alpha(outputs[i], flat[i][4]) for i in mine],
                seeds=[flat[i][1] for i in mine],
                info={**result_info(p), "strength": p.strength},
            )
        )
    return results
